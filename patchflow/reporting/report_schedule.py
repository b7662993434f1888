"""The report schedule, kept in the settings table so that every door (CLI, API, console) edits
the same row and `patchflow serve` picks a change up without a restart.

One weekly schedule: weekday, time (in `[schedule] timezone`), report kinds and optional
recipients. Values are validated here, once, whichever door they came through.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from patchflow.errors import UserError
from patchflow.ops import settings_store
from patchflow.reporting.service import KINDS

PREFIX = "schedule.report."
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


@dataclass(frozen=True)
class ReportSchedule:
    weekday: str
    at: str
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    email: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"weekday": self.weekday, "at": self.at, "kinds": list(self.kinds),
                "email": list(self.email)}


def parse_kinds(value: str | None) -> list[str]:
    """'all' or a comma-separated subset of KINDS, returned in the canonical order."""
    if value is None or value.strip().lower() in ("", "all"):
        return list(KINDS)
    wanted = [k.strip().lower() for k in value.split(",") if k.strip()]
    unknown = [k for k in wanted if k not in KINDS]
    if unknown:
        raise UserError(f"unknown report kind {unknown[0]!r}: use {', '.join(KINDS)} or all")
    return [k for k in KINDS if k in wanted]


def load(session: Session) -> ReportSchedule | None:
    rows = settings_store.read_group(session, PREFIX)
    weekday, at = rows.get("weekday"), rows.get("at")
    if not weekday or not at:
        return None
    kinds = json.loads(rows.get("kinds") or "null") or list(KINDS)
    email = json.loads(rows.get("email") or "null") or []
    return ReportSchedule(weekday=weekday, at=at, kinds=kinds, email=email)


def save(session: Session, weekday: str, at: str, kinds: str | None = None,
         email: list[str] | None = None) -> ReportSchedule:
    """Validate everything first: nothing is stored unless every value is valid."""
    day = (weekday or "").strip().lower()
    if day not in WEEKDAYS:
        raise UserError(f"invalid weekday {weekday!r}: use one of {', '.join(WEEKDAYS)}")
    if not _TIME.fullmatch(at or ""):
        raise UserError(f"invalid time {at!r}: use HH:MM, 24-hour")
    schedule = ReportSchedule(weekday=day, at=at, kinds=parse_kinds(kinds), email=email or [])
    values = {"weekday": day, "at": at, "kinds": json.dumps(schedule.kinds),
              "email": json.dumps(schedule.email)}
    settings_store.write_group(session, PREFIX, values)
    return schedule


def clear(session: Session) -> bool:
    """Remove the schedule; True when there was one."""
    had = load(session) is not None
    settings_store.clear_group(session, PREFIX)
    return had
