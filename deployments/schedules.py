"""Schedules as iCalendar RRULEs, built from patch server and policy settings (pure).

Prefect accepts an RRULE with an explicit DTSTART; patchflow keeps the same text to decide
"run if missed" itself (Prefect never backfills), so both agree on when a run was due.
"""

from __future__ import annotations

import datetime as dt

from dateutil.rrule import rrulestr

DAYS = {"monday": "MO", "tuesday": "TU", "wednesday": "WE", "thursday": "TH", "friday": "FR",
        "saturday": "SA", "sunday": "SU"}


def _start(at: str, start: dt.datetime | None) -> tuple[str, int, int]:
    hour, minute = (int(x) for x in at.split(":"))
    base = (start or dt.datetime(2026, 1, 1)).replace(tzinfo=None)
    return base.strftime("%Y%m%dT000000"), hour, minute


def sync_rrule(frequency: str, weekday: str, at: str, week_of_month: int | None = None,
               start: dt.datetime | None = None) -> str:
    """Weekly on a weekday, or monthly on the Nth weekday (5 = the last one)."""
    dtstart, hour, minute = _start(at, start)
    day = DAYS[weekday.lower()]
    if frequency == "weekly":
        rule = f"FREQ=WEEKLY;BYDAY={day}"
    elif frequency == "monthly":
        pos = -1 if (week_of_month or 1) >= 5 else (week_of_month or 1)
        rule = f"FREQ=MONTHLY;BYDAY={day};BYSETPOS={pos}"
    else:
        raise ValueError(f"unknown frequency {frequency!r}")
    return f"DTSTART:{dtstart}\nRRULE:{rule};BYHOUR={hour};BYMINUTE={minute};BYSECOND=0"


def scan_rrule(weekday: str, at: str, every_weeks: int, start: dt.datetime | None = None) -> str:
    """Every N weeks on a weekday; the fixed start decides which weeks count."""
    dtstart, hour, minute = _start(at, start)
    return (f"DTSTART:{dtstart}\nRRULE:FREQ=WEEKLY;INTERVAL={max(1, every_weeks)};"
            f"BYDAY={DAYS[weekday.lower()]};BYHOUR={hour};BYMINUTE={minute};BYSECOND=0")


def daily_rrule(at: str) -> str:
    """Every day at HH:MM (the vulnerability feeds)."""
    dtstart, hour, minute = _start(at, None)
    return f"DTSTART:{dtstart}\nRRULE:FREQ=DAILY;BYHOUR={hour};BYMINUTE={minute};BYSECOND=0"


def _naive(value: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
    return value.astimezone(tz).replace(tzinfo=None) if value.tzinfo else value


def last_due(rrule: str, now: dt.datetime, tz: dt.tzinfo = dt.UTC) -> dt.datetime | None:
    """The latest scheduled time at or before `now` (aware, in `tz`), or None."""
    found = rrulestr(rrule).before(_naive(now, tz), inc=True)
    return found.replace(tzinfo=tz) if found else None


def next_due(rrule: str, now: dt.datetime, tz: dt.tzinfo = dt.UTC) -> dt.datetime | None:
    found = rrulestr(rrule).after(_naive(now, tz), inc=False)
    return found.replace(tzinfo=tz) if found else None


def missed_run(rrule: str, last_run: dt.datetime | None, created: dt.datetime,
               now: dt.datetime, tz: dt.tzinfo = dt.UTC) -> dt.datetime | None:
    """The due time that passed without a run since the schedule was set, if any."""
    due = last_due(rrule, now, tz)
    if due is None or due < created:
        return None
    if last_run is not None and last_run >= due:
        return None
    return due
