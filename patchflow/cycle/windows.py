"""Maintenance windows: when a policy's endpoints may be given installs and may restart (pure).

A window is weekdays + a time range + an IANA time zone: "mon,tue 02:00–05:00 Europe/Paris".
The days are the days the range *starts*; a range whose end is not after its start crosses
midnight (fri 22:00–02:00 runs from Friday 22:00 to Saturday 02:00). Times are wall-clock
times in the window's zone, so a window follows daylight saving time: on the night the clocks
go forward a 02:00 start that does not exist opens when the clock jumps (03:00 local), and on
the night they go back a 02:00–05:00 window lasts the extra hour the night really has.

A policy without windows is always open: windows restrict, their absence never blocks.
Everything here takes the instant to judge as an argument (timezone-aware, any zone), so the
callers decide what "now" is and the tests can judge any instant.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from patchflow.errors import UserError

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


@dataclass(frozen=True)
class Window:
    """One maintenance window; `days` are weekday numbers (Monday 0) the range starts on."""

    days: frozenset[int]
    start: dt.time
    end: dt.time
    tz: str

    @property
    def crosses_midnight(self) -> bool:
        return self.end <= self.start

    def label(self) -> str:
        """'mon,tue 02:00-05:00 Europe/Paris' (the form `window add` takes)."""
        return f"{format_days(self.days)} {self.start:%H:%M}-{self.end:%H:%M} {self.tz}"


# --- parsing (the CLI's and the store's validation) --------------------------------------------


def parse_day(text: str) -> int:
    word = text.strip().lower()
    for names in (DAY_NAMES, _FULL):
        if word in names:
            return names.index(word)
    raise UserError(f"invalid weekday {text.strip()!r}: use mon, tue, wed, thu, fri, sat, sun")


def parse_days(text: str | None) -> frozenset[int]:
    """'mon,tue', 'mon-fri', 'fri-mon' (wraps), 'daily'; full names work too."""
    value = (text or "").strip().lower()
    if not value:
        raise UserError("--days is required, e.g. --days mon,tue or --days mon-fri")
    if value in ("daily", "all", "every"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in value.split(","):
        if not part.strip():
            raise UserError(f"invalid --days {text!r}: an empty day between commas")
        if "-" in part:
            first, _, last = part.partition("-")
            a, b = parse_day(first), parse_day(last)
            days.update((a + n) % 7 for n in range((b - a) % 7 + 1))
        else:
            days.add(parse_day(part))
    return frozenset(days)


def format_days(days: Iterable[int]) -> str:
    return ",".join(DAY_NAMES[d] for d in sorted(set(days)))


def parse_time(text: str | None, option: str) -> dt.time:
    match = _TIME.match((text or "").strip())
    if not match:
        raise UserError(f"invalid {option} {text!r}: use HH:MM (24-hour), e.g. 02:00")
    return dt.time(int(match.group(1)), int(match.group(2)))


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone `name` ('Europe/Paris', 'UTC'); a one-line UserError otherwise."""
    key = (name or "").strip()
    if not key:
        raise UserError("--tz is required: an IANA time zone such as Europe/Paris or UTC")
    try:
        return ZoneInfo(key)
    except (ZoneInfoNotFoundError, ValueError):
        raise UserError(f"unknown time zone {key!r}: use an IANA name such as "
                        "Europe/Paris, America/New_York or UTC") from None


def make_window(days: str | None, start: str | None, end: str | None,
                tz: str | None) -> Window:
    """A validated window from the CLI's text options."""
    parsed_start = parse_time(start, "--from")
    parsed_end = parse_time(end, "--to")
    if parsed_start == parsed_end:
        raise UserError("--from and --to are the same time: a window needs a length "
                        "(a range that ends before it starts crosses midnight)")
    return Window(parse_days(days), parsed_start, parsed_end, zone(tz).key)


# --- judging instants ---------------------------------------------------------------------------


def _aware(t: dt.datetime) -> dt.datetime:
    if t.tzinfo is None:
        raise ValueError("a maintenance window judges timezone-aware instants only")
    return t.astimezone(dt.UTC)


def _local_instant(day: dt.date, at: dt.time, tz: ZoneInfo) -> dt.datetime:
    """The UTC instant of wall-clock `at` on `day` in `tz`. A time the clocks skip (spring
    forward) resolves with the offset before the jump, i.e. to the moment of the jump or after
    it; a time that happens twice (fall back) is its first occurrence."""
    return dt.datetime.combine(day, at, tzinfo=tz).astimezone(dt.UTC)


def occurrences(window: Window, around: dt.datetime, days_before: int = 1,
                days_after: int = 8) -> list[tuple[dt.datetime, dt.datetime]]:
    """The window's [open, close) UTC intervals whose start day lies from `days_before` days
    before `around`'s local date to `days_after` days after it, in order."""
    tz = ZoneInfo(window.tz)
    local_day = _aware(around).astimezone(tz).date()
    out = []
    for offset in range(-days_before, days_after + 1):
        day = local_day + dt.timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        end_day = day + dt.timedelta(days=1) if window.crosses_midnight else day
        opens = _local_instant(day, window.start, tz)
        closes = _local_instant(end_day, window.end, tz)
        if closes > opens:
            out.append((opens, closes))
    return out


def open_until(windows: Sequence[Window], t: dt.datetime) -> dt.datetime | None:
    """When the window open at `t` closes (the latest close when several overlap); None when
    no window is open at `t`. Without windows nothing is ever closed: use `is_open`."""
    now = _aware(t)
    closes = [close for w in windows for opens, close in occurrences(w, now)
              if opens <= now < close]
    return max(closes) if closes else None


def is_open(windows: Sequence[Window], t: dt.datetime) -> bool:
    """True when `t` is inside one of the windows, or there are no windows at all."""
    return not windows or open_until(windows, t) is not None


def next_open(windows: Sequence[Window], t: dt.datetime
              ) -> tuple[dt.datetime, Window] | None:
    """The first window opening after `t` (UTC) and its window; None without windows. Every
    window has at least one day, so one opens within the next eight days."""
    now = _aware(t)
    found = [(opens, w) for w in windows for opens, _close in occurrences(w, now, 0, 8)
             if opens > now]
    return min(found, key=lambda pair: pair[0]) if found else None


def waiting_note(windows: Sequence[Window], t: dt.datetime) -> str:
    """'waiting for maintenance window (opens Tue 02:00 Europe/Paris)': the item's message
    while it waits, in the zone of the window that opens next."""
    upcoming = next_open(windows, t)
    if upcoming is None:
        return "waiting for maintenance window"
    opens, window = upcoming
    local = opens.astimezone(ZoneInfo(window.tz))
    return f"waiting for maintenance window (opens {local:%a %Y-%m-%d %H:%M} {window.tz})"
