"""Schedule RRULEs and the "run if missed" decision, against hand-checked calendar dates."""

from __future__ import annotations

import datetime as dt

from deployments.schedules import last_due, missed_run, next_due, scan_rrule, sync_rrule

UTC = dt.UTC


def test_monthly_second_tuesday() -> None:
    rule = sync_rrule("monthly", "tuesday", "22:00", 2)
    assert "BYSETPOS=2" in rule
    # Patch Tuesdays: 2026-11-10 and 2026-12-08.
    now = dt.datetime(2026, 11, 29, 12, tzinfo=UTC)
    assert last_due(rule, now) == dt.datetime(2026, 11, 10, 22, tzinfo=UTC)
    assert next_due(rule, now) == dt.datetime(2026, 12, 8, 22, tzinfo=UTC)


def test_monthly_last_friday_and_weekly() -> None:
    last_friday = sync_rrule("monthly", "friday", "06:30", 5)
    assert next_due(last_friday, dt.datetime(2026, 11, 1, tzinfo=UTC)) == dt.datetime(
        2026, 11, 27, 6, 30, tzinfo=UTC)
    weekly = sync_rrule("weekly", "sunday", "01:00")
    assert next_due(weekly, dt.datetime(2026, 11, 29, 2, tzinfo=UTC)) == dt.datetime(
        2026, 12, 6, 1, tzinfo=UTC)


def test_every_two_weeks_from_a_fixed_start() -> None:
    rule = scan_rrule("monday", "03:00", 2, start=dt.datetime(2026, 11, 2))
    now = dt.datetime(2026, 11, 20, tzinfo=UTC)
    # Mondays 2 Nov, 16 Nov, 30 Nov: every other week from the start.
    assert last_due(rule, now) == dt.datetime(2026, 11, 16, 3, tzinfo=UTC)
    assert next_due(rule, now) == dt.datetime(2026, 11, 30, 3, tzinfo=UTC)


def test_run_if_missed() -> None:
    rule = scan_rrule("monday", "03:00", 1, start=dt.datetime(2026, 11, 2))
    created = dt.datetime(2026, 11, 1, tzinfo=UTC)
    now = dt.datetime(2026, 11, 24, 9, tzinfo=UTC)  # Tuesday after the 23rd's run
    due = dt.datetime(2026, 11, 23, 3, tzinfo=UTC)
    assert missed_run(rule, None, created, now) == due
    assert missed_run(rule, dt.datetime(2026, 11, 16, 3, 5, tzinfo=UTC), created, now) == due
    assert missed_run(rule, dt.datetime(2026, 11, 23, 3, 1, tzinfo=UTC), created, now) is None
    # A schedule set after the last due time has missed nothing.
    assert missed_run(rule, None, dt.datetime(2026, 11, 23, 8, tzinfo=UTC), now) is None
