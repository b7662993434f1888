"""Groups of server settings in the `settings` table, one row per key under a shared prefix
(`smtp.`, `schedule.report.`).

Settings edited from every door (CLI, admin API, console) live in the database rather than in
patchflow.toml, so they travel with a backup and apply without a restart. Each owner
(patchflow.reporting.mail, patchflow.reporting.report_schedule) validates its values; this module
only reads, writes and clears its group of rows.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models import Setting


def read_group(session: Session, prefix: str) -> dict[str, str | None]:
    """The group's values by key, without the prefix."""
    rows = session.execute(select(Setting.key, Setting.value).where(Setting.key.like(prefix + "%")))
    return {key[len(prefix):]: value for key, value in rows}


def write_group(session: Session, prefix: str, values: Mapping[str, str | None]) -> None:
    """Insert or update each key (given without the prefix); other keys of the group stay."""
    for key, value in values.items():
        row = session.get(Setting, prefix + key)
        if row is None:
            session.add(Setting(key=prefix + key, value=value))
        else:
            row.value = value
    session.flush()


def clear_group(session: Session, prefix: str) -> None:
    session.execute(delete(Setting).where(Setting.key.like(prefix + "%")))
    session.flush()
