"""Maintenance windows end to end on loopback, on SQLite and MariaDB: the real HTTPS server, a
simulated agent polling it, the sample catalog synced, and `patchflow install now --wait` or
`patchflow cycle run --wait` driving the install flow. The policy's only window opens at the
next minute (wall-clock time in Europe/Paris, computed from the real clock): the agent polls
and gets nothing while the item waits with its note, the item is offered once the window is
open, and the restart it needs is allowed (it is inside the window). No clock is faked: the
tests wait for that minute to come.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from models import InstallJobItem
from tests.fixtures.agent.harness import Api
from tests.fixtures.install.agents import SimAgent, inventory
from tests.fixtures.install.loopback import (
    sim_fleet,
    synced_api_on_both_databases,
)

pytestmark = pytest.mark.usefixtures("prefect")
PARIS = ZoneInfo("Europe/Paris")


api = synced_api_on_both_databases("windows", {
    "install": {"poll_seconds": 0.2, "retry_delay_s": 0, "item_timeout_s": 30},
    "cycle": {"verify_wait_s": 20, "verify_poll_s": 0.2},
})


@pytest.fixture
def fleet(api: Api, tmp_path: Path) -> Iterator[Callable[..., SimAgent]]:
    with sa.create_engine(api.db_url).begin() as conn:
        for table in ("maintenance_windows", "cycle_runs", "patch_approvals"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    with sim_fleet(api, tmp_path) as make:
        yield make


def _json(result: Any) -> Any:
    assert result.code == 0, result.err
    return json.loads(result.out)


def _next_minute(lead_s: int) -> dt.datetime:
    """The first minute boundary at least `lead_s` seconds away: time for the job to reach
    its dispatch (after the cycle's scan and approval) before the window opens."""
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=lead_s)
    return later.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


def _window_at_next_minute(cli: Any, policy: str, lead_s: int
                           ) -> tuple[dt.datetime, dt.datetime]:
    """The policy's only window: from a coming minute (that day in Paris), for an hour;
    returns when it opens and closes (UTC)."""
    opens = _next_minute(lead_s)
    local = opens.astimezone(PARIS)
    closes = opens + dt.timedelta(minutes=60)
    window = _json(cli("policies", "window", "add", policy, "--days",
                       f"{local:%a}".lower(), "--from", f"{local:%H:%M}",
                       "--to", f"{closes.astimezone(PARIS):%H:%M}", "--tz", "Europe/Paris",
                       "--json"))
    assert window["open_now"] is False
    assert dt.datetime.fromisoformat(window["next_open"]) == opens
    return opens, closes


def _assert_waited_then_went(api: Api, item: dict[str, Any], agent: SimAgent,
                             opens: dt.datetime, closes: dt.datetime) -> None:
    events = [(e["state"], dt.datetime.fromisoformat(e["at"]), e["message"])
              for e in item["events"]]
    assert [state for state, _at, _m in events][:3] == ["pending", "pending", "dispatched"], \
        events
    _created, (_p, noted_at, note), (_d, dispatched_at, _m) = events[:3]
    local = opens.astimezone(PARIS)
    assert note == (f"waiting for maintenance window (opens {local:%a %Y-%m-%d %H:%M} "
                    "Europe/Paris)")
    assert noted_at < opens <= dispatched_at  # not offered before the window opened
    assert item["attempts"] == 1
    # Inside the window the restart was allowed: the agent restarted to finish.
    assert "restarting" in item["message"]
    assert agent.doc["simulate"].get("restarts") == 1
    items = InstallJobItem.__table__
    with sa.create_engine(api.db_url).connect() as conn:
        until = conn.execute(sa.select(items.c.restart_until)
                             .where(items.c.id == item["id"])).scalar_one()
    assert until == closes  # the agent may restart until the window closes


def test_an_item_waits_for_its_window_and_is_dispatched_inside_it(
        api: Api, fleet: Callable[..., SimAgent], cli: Any) -> None:
    assert cli("groups", "add", "Office").code == 0
    assert cli("policies", "add", "WinP", "--patch-server", "local", "--groups",
               "Office").code == 0
    agent = fleet(inventory("WS-W", 5800, ["KB5890010", "KB5900150"], [],
                            {"exit_codes": {"KB5900110": 3010}}), group="Office")
    agent.runner.upload_inventory()
    assert cli("scan", "--endpoints", "WS-W").code == 0

    opens, closes = _window_at_next_minute(cli, "WinP", 15)
    agent.start()
    run = cli("install", "now", "KB5900110", "--endpoints", "WS-W", "--allow-restart",
              "--wait", "--json")
    summary = _json(run)
    assert "Traceback" not in run.err
    assert summary["reboot_pending"] + summary["succeeded"] == 1
    job = _json(cli("jobs", "show", str(summary["job_id"]), "--json"))
    [item] = job["items_detail"]
    _assert_waited_then_went(api, item, agent, opens, closes)


# On SQLite only: the cycle hands its items to the same dispatch the test above runs on both
# databases, and each of these tests waits for a minute boundary (45 s to 105 s here).
@pytest.mark.parametrize("api", ["sqlite"], indirect=True)
def test_the_cycle_install_step_waits_for_the_window(
        api: Api, fleet: Callable[..., SimAgent], cli: Any) -> None:
    assert cli("groups", "add", "Office").code == 0
    assert cli("policies", "add", "WinC", "--patch-server", "local", "--groups", "Office",
               "--auto-restart").code == 0
    agent = fleet(inventory("WS-C", 5800, ["KB5890010", "KB5900150"], [],
                            {"exit_codes": {"KB5900110": 3010}}), group="Office")
    agent.runner.upload_inventory()
    assert cli("approve", "KB5900110", "--groups", "Office").code == 0
    opens, closes = _window_at_next_minute(cli, "WinC", 45)
    agent.start()
    out = _json(cli("cycle", "run", "WinC", "--wait", "--json"))
    assert out["state"] == "Completed", out
    assert {s["name"]: s["state"] for s in out["steps"]}["install"] == "Completed"
    job = _json(cli("jobs", "show", str(out["install_job_id"]), "--json"))
    [item] = job["items_detail"]
    _assert_waited_then_went(api, item, agent, opens, closes)
