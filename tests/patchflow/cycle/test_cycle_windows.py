"""Maintenance windows: the pure rules (days, crossing midnight, daylight saving time, no
windows = always open), the dispatch gate on SQLite and MariaDB (an item outside its window
stays pending with a note and is offered by the sweep once a window is open; the restart
deadline the agent is given), and `patchflow policies window add|list|delete`."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from models import InstallItemEvent, InstallJobItem, MaintenanceWindow, Policy
from models.db import session_scope
from patchflow import install as svc
from patchflow.cycle import window_store
from patchflow.cycle import windows as w
from patchflow.errors import UserError
from patchflow.install import agent_jobs, dispatch
from patchflow.install.settings import InstallSettings
from tests.fixtures.install.world import World, build

UTC = dt.UTC
FAST = InstallSettings(max_attempts=2, item_timeout_s=60, retry_delay_s=0, poll_seconds=0.01)


def at(text: str) -> dt.datetime:
    """'2026-12-07 02:00' as a UTC instant."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def win(days: str, start: str, end: str, tz: str = "UTC") -> w.Window:
    return w.make_window(days, start, end, tz)


# --- pure ---------------------------------------------------------------------------------------


def test_no_windows_is_always_open() -> None:
    for t in (at("2026-12-07 00:00"), at("2026-03-29 02:30"), at("2026-12-31 23:59")):
        assert w.is_open([], t)
        assert w.next_open([], t) is None
        assert w.open_until([], t) is None


def test_a_window_opens_on_its_days_and_closes_at_its_end() -> None:
    mon_tue = [win("mon,tue", "02:00", "05:00")]  # 2026-12-07 is a Monday
    assert not w.is_open(mon_tue, at("2026-12-07 01:59"))
    assert w.is_open(mon_tue, at("2026-12-07 02:00"))
    assert w.open_until(mon_tue, at("2026-12-07 04:59")) == at("2026-12-07 05:00")
    assert not w.is_open(mon_tue, at("2026-12-07 05:00"))  # the end is not inside
    assert w.is_open(mon_tue, at("2026-12-08 03:00"))
    assert not w.is_open(mon_tue, at("2026-12-09 03:00"))  # Wednesday
    opens, window = w.next_open(mon_tue, at("2026-12-08 06:00")) or (None, None)
    assert opens == at("2026-12-14 02:00") and window == mon_tue[0]  # next Monday
    assert w.next_open(mon_tue, at("2026-12-07 01:00"))[0] == at("2026-12-07 02:00")  # type: ignore[index]


def test_a_range_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    friday_night = [win("fri", "22:00", "02:00")]  # 2026-12-11 is a Friday
    assert not w.is_open(friday_night, at("2026-12-11 21:59"))
    assert w.is_open(friday_night, at("2026-12-11 23:30"))
    assert w.is_open(friday_night, at("2026-12-12 01:59"))  # Saturday morning
    assert w.open_until(friday_night, at("2026-12-12 01:00")) == at("2026-12-12 02:00")
    assert not w.is_open(friday_night, at("2026-12-12 02:00"))
    assert not w.is_open(friday_night, at("2026-12-12 23:00"))  # Saturday night
    assert not w.is_open(friday_night, at("2026-12-11 01:00"))  # Friday morning: Thursday's
    assert friday_night[0].crosses_midnight


def test_windows_follow_the_zone_and_its_daylight_saving_time() -> None:
    paris = [win("sun", "02:00", "05:00", "Europe/Paris")]
    # Winter (CET, UTC+1) and summer (CEST, UTC+2) Sundays.
    assert w.open_until(paris, at("2026-12-06 01:00")) == at("2026-12-06 04:00")
    assert not w.is_open(paris, at("2026-12-06 00:59"))
    assert w.open_until(paris, at("2026-07-05 00:00")) == at("2026-07-05 03:00")
    assert not w.is_open(paris, at("2026-07-05 03:00"))
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST, so 02:00 does not exist: the window opens at
    # the jump (01:00 UTC) and closes at 05:00 CEST (03:00 UTC): two real hours.
    assert not w.is_open(paris, at("2026-03-29 00:59"))
    assert w.is_open(paris, at("2026-03-29 01:00"))
    assert w.open_until(paris, at("2026-03-29 02:59")) == at("2026-03-29 03:00")
    assert not w.is_open(paris, at("2026-03-29 03:00"))
    assert w.next_open(paris, at("2026-03-28 12:00"))[0] == at("2026-03-29 01:00")  # type: ignore[index]
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET: 02:00 (first time) to 05:00 CET is four
    # real hours.
    assert not w.is_open(paris, at("2026-10-24 23:59"))
    assert w.is_open(paris, at("2026-10-25 00:00"))
    assert w.open_until(paris, at("2026-10-25 01:30")) == at("2026-10-25 04:00")
    assert not w.is_open(paris, at("2026-10-25 04:00"))
    # The same wall-clock window in another zone is another instant.
    new_york = [win("sun", "02:00", "05:00", "America/New_York")]
    assert not w.is_open(new_york, at("2026-12-06 01:00"))
    assert w.is_open(new_york, at("2026-12-06 07:00"))


def test_several_windows_and_the_waiting_note() -> None:
    windows = [win("tue", "02:00", "05:00", "Europe/Paris"), win("mon-fri", "22:00", "23:00")]
    # Monday 2026-12-07 12:00 UTC: the next opening is Monday 22:00 UTC (the UTC window).
    assert w.next_open(windows, at("2026-12-07 12:00"))[0] == at("2026-12-07 22:00")  # type: ignore[index]
    assert (w.waiting_note(windows, at("2026-12-07 23:30"))
            == "waiting for maintenance window (opens Tue 2026-12-08 02:00 Europe/Paris)")
    assert w.open_until(windows, at("2026-12-08 01:30")) == at("2026-12-08 04:00")
    # Overlapping windows: open until the later close.
    overlapping = [win("mon", "01:00", "03:00"), win("mon", "02:00", "06:00")]
    assert w.open_until(overlapping, at("2026-12-07 02:30")) == at("2026-12-07 06:00")


def test_parsing_and_validation() -> None:
    assert w.parse_days("mon-fri") == frozenset(range(5))
    assert w.parse_days("fri-mon") == frozenset({4, 5, 6, 0})
    assert w.parse_days("Monday,sun") == frozenset({0, 6})
    assert w.parse_days("daily") == frozenset(range(7))
    assert win("sat,sun", "23:00", "01:30", "Europe/Paris").label() \
        == "sat,sun 23:00-01:30 Europe/Paris"
    bad: list[tuple[tuple[Any, ...], str]] = [
        (("mon,xx", "02:00", "03:00", "UTC"), "invalid weekday 'xx'"),
        ((None, "02:00", "03:00", "UTC"), "--days is required"),
        (("mon,,tue", "02:00", "03:00", "UTC"), "empty day"),
        (("mon", "24:00", "03:00", "UTC"), "invalid --from '24:00'"),
        (("mon", "02:00", "3h", "UTC"), "invalid --to '3h'"),
        (("mon", "02:00", "02:00", "UTC"), "the same time"),
        (("mon", "02:00", "03:00", "Mars/Base"), "unknown time zone 'Mars/Base'"),
        (("mon", "02:00", "03:00", "../../etc/passwd"), "unknown time zone"),
        (("mon", "02:00", "03:00", None), "--tz is required"),
    ]
    for args, message in bad:
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            w.make_window(*args)
    with pytest.raises(ValueError, match="timezone-aware"):
        w.is_open([win("mon", "02:00", "03:00")], dt.datetime(2026, 12, 7, 2, 30))


# --- the dispatch gate (database) -------------------------------------------------------------


@pytest.fixture
def world(home: Path) -> World:
    with session_scope() as session:
        return build(session)


def _hhmm(t: dt.datetime) -> str:
    return f"{t:%H:%M}"


def closed_now() -> tuple[str, str]:
    """A daily UTC window that starts two hours from now: closed for the test's duration."""
    now = dt.datetime.now(UTC)
    return _hhmm(now + dt.timedelta(hours=2)), _hhmm(now + dt.timedelta(hours=3))


def open_now() -> tuple[str, str]:
    now = dt.datetime.now(UTC)
    return _hhmm(now - dt.timedelta(hours=1)), _hhmm(now + dt.timedelta(hours=1))


def _trail(item_id: int) -> list[tuple[str, str | None]]:
    with session_scope() as session:
        return list(session.execute(
            select(InstallItemEvent.state, InstallItemEvent.message)
            .where(InstallItemEvent.item_id == item_id).order_by(InstallItemEvent.id)).tuples())


def test_items_outside_their_window_wait_and_go_when_one_opens(world: World) -> None:
    ws1 = world.endpoints["WS-1"]
    start, end = closed_now()
    with session_scope() as session:
        window_store.add_window(session, "Office", "daily", start, end, "UTC", "alice")
        job_id = svc.create_job(session, [(world.patches["kb"], ws1)], "alice",
                                allow_restart=True, settings=FAST).id
    dispatch.start_job(job_id, None)
    assert dispatch.resolve_items(job_id) == {"resolved": 1, "failed": 0}
    assert dispatch.dispatch(job_id, {}) == {"dispatched": 0, "failed": 0, "waiting": 1}
    assert agent_jobs.poll(ws1) == []
    for _ in range(3):  # the sweep keeps it waiting, noted once on its trail
        state = dispatch.sweep(job_id, retry_delay_s=0)
        assert state["released"] == 0 and state["counts"] == {"pending": 1}
    with session_scope() as session:
        item = session.scalars(select(InstallJobItem).where(InstallJobItem.job_id == job_id)).one()
        item_id, message = item.id, item.message
    assert message == f"waiting for maintenance window (opens {_next_label(start)} UTC)"
    assert [s for s, _m in _trail(item_id)] == ["pending", "pending"]

    # The window is replaced by one open now: the next sweep offers the item, and the agent
    # may restart until that window closes.
    start, end = open_now()
    with session_scope() as session:
        [old] = window_store.list_windows(session, "Office")
        window_store.delete_window(session, "Office", old["id"], "alice")
        added = window_store.add_window(session, "Office", "daily", start, end, "UTC", "alice")
    assert added["open_now"] is True
    assert dispatch.sweep(job_id, retry_delay_s=0)["released"] == 1
    [offered] = agent_jobs.poll(ws1)
    assert offered["allow_restart"] is True
    with session_scope() as session:
        item = session.get(InstallJobItem, item_id)
        assert item is not None and item.state == "dispatched" and item.attempts == 1
        assert item.restart_until == dt.datetime.fromisoformat(added["closes_at"])
        # Picked up after its window closed: installed, but no restart.
        item.restart_until = dt.datetime.now(UTC) - dt.timedelta(seconds=1)
    [late] = agent_jobs.poll(ws1)
    assert late["allow_restart"] is False
    assert [s for s, _m in _trail(item_id)] == ["pending", "pending", "dispatched"]


def _next_label(start: str) -> str:
    """'Tue 2026-12-08 02:00' for a daily UTC window opening at `start` after now."""
    now = dt.datetime.now(UTC)
    opens = now.replace(hour=int(start[:2]), minute=int(start[3:]), second=0, microsecond=0)
    if opens <= now:
        opens += dt.timedelta(days=1)
    return f"{opens:%a %Y-%m-%d %H:%M}"


def test_only_the_policy_with_windows_waits_and_retries_wait_too(world: World) -> None:
    ws1, ws2 = world.endpoints["WS-1"], world.endpoints["WS-2"]
    with session_scope() as session:
        other = Policy(name="Servers", patch_server_id=world.server)
        session.add(other)
        session.flush()
        start, end = closed_now()
        window_store.add_window(session, "Servers", "daily", start, end, "UTC", "alice")
        job_id = svc.create_job(session, [(world.patches["kb"], e) for e in (ws1, ws2)],
                                "alice", settings=FAST).id
    dispatch.start_job(job_id, None)
    dispatch.resolve_items(job_id)
    # Office has no window: both go.
    assert dispatch.dispatch(job_id, {})["dispatched"] == 2
    assert all(j["allow_restart"] is False for j in agent_jobs.poll(ws1))  # the job says no

    # Office gets a closed window; a retryable failure then waits for it before its retry.
    with session_scope() as session:
        window_store.add_window(session, "Office", "mon-sun", start, end, "UTC", "alice")
    [job] = agent_jobs.poll(ws1)
    agent_jobs.record_result(ws1, job["id"], {"state": "failed", "exit_code": 1618,
                                              "details": {"attempt": 1}})
    state = dispatch.sweep(job_id, retry_delay_s=0)
    assert state["retried"] == 0 and state["counts"] == {"pending": 1, "dispatched": 1}
    with session_scope() as session:
        session.execute(update(InstallJobItem).where(InstallJobItem.id == job["id"])
                        .values(updated_at=dt.datetime.now(UTC) - dt.timedelta(minutes=5)))
        message = session.get(InstallJobItem, job["id"]).message  # type: ignore[union-attr]
    assert message.startswith("waiting for maintenance window (opens ")
    assert dispatch.sweep(job_id, retry_delay_s=0)["retried"] == 0


# --- CLI ------------------------------------------------------------------------------------------


def test_cli_window_add_list_delete_and_bad_input(world: World, cli) -> None:  # type: ignore[no-untyped-def]
    added = cli("policies", "window", "add", "Office", "--days", "mon,tue", "--from", "02:00",
                "--to", "05:00", "--tz", "Europe/Paris", "--json")
    assert added.code == 0, added.err
    row = json.loads(added.out)
    assert (row["days"], row["from"], row["to"], row["tz"]) == ("mon,tue", "02:00", "05:00",
                                                                "Europe/Paris")
    night = cli("policies", "window", "add", "Office", "--days", "fri", "--from", "22:00",
                "--to", "02:00", "--tz", "UTC")
    assert night.code == 0 and "fri 22:00-02:00 UTC" in night.out
    listed = json.loads(cli("policies", "window", "list", "Office", "--json").out)
    assert [(r["days"], r["crosses_midnight"]) for r in listed] == [("mon,tue", False),
                                                                   ("fri", True)]
    assert all(r["next_open"] for r in listed)
    assert "Europe/Paris" in cli("policies", "window", "list", "Office").out

    for args, message in [
        (["--days", "mon", "--from", "02:00", "--to", "05:00", "--tz", "Nowhere/City"],
         "unknown time zone 'Nowhere/City'"),
        (["--days", "moon", "--from", "02:00", "--to", "05:00", "--tz", "UTC"],
         "invalid weekday 'moon'"),
        (["--days", "mon", "--from", "2am", "--to", "05:00", "--tz", "UTC"], "invalid --from"),
        (["--days", "mon", "--from", "02:00", "--to", "05:00"], "--tz is required"),
        (["--days", "mon", "--from", "02:00", "--to", "02:00", "--tz", "UTC"], "same time"),
    ]:
        bad = cli("policies", "window", "add", "Office", *args)
        assert bad.code == 2 and message in bad.err, bad.err
        assert len(bad.err.strip().splitlines()) == 1 and "Traceback" not in bad.err
    for args, message in [
        (["add", "Nope", "--days", "mon", "--from", "02:00", "--to", "05:00", "--tz", "UTC"],
         "no policy named 'Nope'"),
        (["delete", "Office", "999"], "has no maintenance window 999"),
        (["delete", "Office", "x"], "Invalid value"),
    ]:
        bad = cli("policies", "window", *args)
        assert bad.code == 2 and message in bad.err, bad.err
        assert len(bad.err.strip().splitlines()) == 1
    assert len(json.loads(cli("policies", "window", "list", "Office", "--json").out)) == 2

    gone = cli("policies", "window", "delete", "Office", str(row["id"]))
    assert gone.code == 0
    assert [r["days"] for r in json.loads(
        cli("policies", "window", "list", "Office", "--json").out)] == ["fri"]
    audit = json.loads(cli("audit", "list", "--action", "window.", "--json").out)
    assert {a["action"] for a in audit} == {"window.add", "window.delete"}
    # Deleting the policy deletes its windows.
    assert cli("policies", "delete", "Office", "--yes").code == 0
    with session_scope() as session:
        assert session.scalars(select(MaintenanceWindow)).all() == []
