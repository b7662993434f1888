"""endpoint identity: re-enrolment pending approval, reported host name

Revision ID: 0004_endpoint_identity
Revises: 0003_install_results
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_endpoint_identity"
down_revision = "0003_install_results"
branch_labels = None
depends_on = None

_FK = "fk_endpoints_replaces_endpoint_id_endpoints"
_INDEX = "ix_endpoints_replaces_endpoint_id"


def upgrade() -> None:
    # Two nullable columns and a unique index, no existing column touched. On SQLite the table
    # must not be copied (batch "recreate"): with foreign keys on, dropping the old `endpoints`
    # would cascade into every inventory, scan result and install job. SQLite's ADD COLUMN
    # takes an inline REFERENCES clause for a NULL column, so nothing is rebuilt there.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "ALTER TABLE endpoints ADD COLUMN replaces_endpoint_id INTEGER "
            f"CONSTRAINT {_FK} REFERENCES endpoints (id) ON DELETE CASCADE"
        )
        op.execute("ALTER TABLE endpoints ADD COLUMN reported_hostname VARCHAR(255)")
    else:
        with op.batch_alter_table("endpoints", schema=None) as batch_op:
            batch_op.add_column(sa.Column("replaces_endpoint_id", sa.Integer(), nullable=True))
            batch_op.add_column(
                sa.Column("reported_hostname", sa.String(length=255), nullable=True)
            )
            batch_op.create_foreign_key(
                _FK, "endpoints", ["replaces_endpoint_id"], ["id"], ondelete="CASCADE"
            )
    op.create_index(_INDEX, "endpoints", ["replaces_endpoint_id"], unique=True)


def downgrade() -> None:
    # Pending re-enrolments have no meaning without the column that marks them.
    op.execute("DELETE FROM endpoints WHERE replaces_endpoint_id IS NOT NULL")
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index(_INDEX, table_name="endpoints")
        op.execute("ALTER TABLE endpoints DROP COLUMN reported_hostname")
        op.execute("ALTER TABLE endpoints DROP COLUMN replaces_endpoint_id")
        return
    with op.batch_alter_table("endpoints", schema=None) as batch_op:
        batch_op.drop_constraint(_FK, type_="foreignkey")  # before the index it relies on
    op.drop_index(_INDEX, table_name="endpoints")
    with op.batch_alter_table("endpoints", schema=None) as batch_op:
        batch_op.drop_column("reported_hostname")
        batch_op.drop_column("replaces_endpoint_id")
