"""Migrations run one revision at a time (with the `bare_url` fixture of tests/conftest.py), to
test what an upgrade does to the rows an older schema held."""

from __future__ import annotations

from alembic import command

from models.db import get_engine
from models.migrate import alembic_config


def migrate(url: str, revision: str) -> None:
    cfg = alembic_config(url)
    with get_engine(url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


