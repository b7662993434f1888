"""Schema upgrades through Alembic, driven from code so `patchflow init` needs no alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from models.db import DatabaseError, get_engine
from patchflow import config

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", (url or config.database_url()).replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def current_revision(url: str | None = None) -> str | None:
    try:
        with get_engine(url).connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise DatabaseError(f"cannot reach the database: {exc.orig}") from None


def upgrade(url: str | None = None) -> tuple[str | None, str | None]:
    """Upgrade to head; returns (before, after) revisions. Safe to run any number of times."""
    before = current_revision(url)
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return before, current_revision(url)


def _sqlite_file_missing(url: str) -> bool:
    """Connecting would create the file (and its folder): a typo'd home must not leave one."""
    parsed = make_url(url)
    return (
        parsed.get_backend_name() == "sqlite"
        and parsed.database not in (None, "", ":memory:")
        and not Path(parsed.database).exists()
    )


def ensure_current(url: str | None = None) -> None:
    """Commands other than `init` refuse to run on a missing or older schema."""
    url = url or config.database_url()
    current = None if _sqlite_file_missing(url) else current_revision(url)
    if current is None:
        raise DatabaseError("the patch database is not initialised: run `patchflow init`")
    if current != head_revision():
        raise DatabaseError(
            f"the patch database is at revision {current}, this patchflow needs "
            f"{head_revision()}: run `patchflow init` to upgrade"
        )
