"""Alembic environment: the URL comes from the caller (models.migrate), never from alembic.ini."""

from __future__ import annotations

from alembic import context

from models import Base
from models.db import get_engine

url = context.config.get_main_option("sqlalchemy.url")
connection = context.config.attributes.get("connection")


def _run(conn: object) -> None:
    context.configure(
        connection=conn,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode copies the table
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if connection is not None:
    _run(connection)
else:
    with get_engine(url).connect() as conn:
        _run(conn)
        conn.commit()
