"""The patch cycle end to end on loopback, on SQLite and MariaDB: the real HTTPS server,
simulated agents, the sample catalog synced by the sync flow, installers from a loopback
vendor, and `patchflow cycle run` driving sync → scan → approve → install → verify → report.

Covers: a dry run printing the plan with why each patch is approved (manual approval and a
rule), a declined patch left out of the plan, a due sync run as a sub-flow; a real run whose
verification flags the endpoint whose installer claimed success without installing; one cycle
per policy at a time; `cycle list` and `cycle show`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent.platforms.simulated import SimulatedPlatform
from tests.fixtures.agent.harness import Api
from tests.fixtures.install.agents import SimAgent, inventory, program
from tests.fixtures.install.loopback import (
    sim_fleet,
    synced_api_on_both_databases,
)

pytestmark = pytest.mark.usefixtures("prefect")
STEPS = ["sync", "scan", "approve", "install", "verify", "report"]
ZIP = "7zip.7zip@25.01"


class LyingPlatform(SimulatedPlatform):
    """An installer that exits 0 and changes nothing: what verification exists to catch."""

    def install(self, job: dict[str, Any], path: Path | None) -> tuple[int, str]:
        return 0, ""


api = synced_api_on_both_databases("cycle", {
    "install": {"poll_seconds": 0.1, "retry_delay_s": 0, "item_timeout_s": 30},
    "cycle": {"verify_wait_s": 20, "verify_poll_s": 0.2},
})


@pytest.fixture
def fleet(api: Api, tmp_path: Path) -> Iterator[Callable[..., SimAgent]]:
    with sa.create_engine(api.db_url).begin() as conn:
        for table in ("cycle_runs", "patch_approvals", "patch_declines", "approval_rules"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    with sim_fleet(api, tmp_path) as make:
        yield make


def _json(result: Any, code: int = 0) -> Any:
    assert result.code == code, result.err
    return json.loads(result.out)


def _office(fleet: Callable[..., SimAgent], cli: Any) -> tuple[SimAgent, SimAgent]:
    assert cli("groups", "add", "Office").code == 0
    assert cli("policies", "add", "CycleP", "--patch-server", "local", "--groups",
               "Office").code == 0
    agents = []
    for host in ("WS-A", "WS-B"):
        agent = fleet(inventory(host, 5800, ["KB5890010"], [
            program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov")]), group="Office")
        agent.runner.upload_inventory()
        agents.append(agent)
    return agents[0], agents[1]


def test_dry_run_plans_with_reasons_and_syncs_when_due(
        api: Api, fleet: Callable[..., SimAgent], cli: Any) -> None:
    from patchflow import config

    _office(fleet, cli)
    assert cli("approve", "KB5900110", "--groups", "Office").code == 0
    assert cli("rules", "add", "apps", "--groups", "Office", "--products", "7-Zip").code == 0
    assert cli("decline", "KB5900150", "--reason", "pilot found a regression").code == 0
    config.write_config({"cycle": {"sync_max_age_hours": 0}})
    try:
        out = _json(cli("cycle", "run", "CycleP", "--dry-run", "--json"))
    finally:
        config.write_config({"cycle": {"sync_max_age_hours": 24}})
    assert out["state"] == "Completed" and out["flow_run_id"]
    assert [s["name"] for s in out["steps"]] == STEPS
    states = {s["name"]: s["state"] for s in out["steps"]}
    assert states == {"sync": "Completed", "scan": "Completed", "approve": "Completed",
                      "install": "Skipped", "verify": "Skipped", "report": "Completed"}
    assert "synced: Successful" in out["steps"][0]["summary"]
    plan = {p["patch"]: p for p in out["plan"]}
    assert set(plan) == {"KB5900110", ZIP}  # KB5900150 is missing too, but declined
    assert plan["KB5900110"]["endpoints"] == ["WS-A", "WS-B"]
    assert plan["KB5900110"]["why"].startswith("approved by cli:")
    assert plan["KB5900110"]["kb"] == "KB5900110" and plan["KB5900110"]["ring"] == "all"
    assert plan[ZIP]["why"] == "rule 'apps': 7-Zip" and plan[ZIP]["package_id"] == "7zip.7zip"
    # A second dry run finds the catalog fresh and skips the sync.
    again = _json(cli("cycle", "run", "CycleP", "--dry-run", "--json"))
    assert again["steps"][0]["state"] == "Skipped"
    assert "within 24 h" in again["steps"][0]["summary"]
    listed = _json(cli("cycle", "list", "--policy", "CycleP", "--json"))
    assert [r["run"] for r in listed] == [again["run"], out["run"]]
    shown = _json(cli("cycle", "show", str(out["run"]), "--json"))
    assert shown["plan"] == out["plan"]
    assert _json(cli("cycle", "show", out["flow_run_id"], "--json"))["run"] == out["run"]
    for args, message in ((["cycle", "run", "Nope", "--dry-run"], "no policy named 'Nope'"),
                          (["cycle", "show", "999999"], "no cycle run"),
                          (["cycle", "list", "--policy", "Nope"], "no policy named 'Nope'")):
        result = cli(*args)
        assert result.code == 2 and message in result.err, (args, result.err)


def test_cycle_installs_and_verification_flags_a_false_success(
        api: Api, fleet: Callable[..., SimAgent], cli: Any) -> None:
    honest, liar = _office(fleet, cli)
    liar.platform = liar.runner.platform = liar.runner.executor.platform = LyingPlatform(
        liar.inventory_path)
    assert cli("approve", "KB5900110", "--groups", "Office").code == 0
    assert cli("rules", "add", "apps", "--groups", "Office", "--products", "7-Zip").code == 0
    assert cli("decline", "KB5900150").code == 0
    # One cycle per policy at a time.
    with sa.create_engine(api.db_url).begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO cycle_runs (policy_id, policy_name, state, `trigger`, dry_run, "
            "started_at) SELECT id, name, 'Running', 'manual', 0, :now FROM policies"
            if api.db_url.startswith("mysql") else
            "INSERT INTO cycle_runs (policy_id, policy_name, state, \"trigger\", dry_run, "
            "started_at) SELECT id, name, 'Running', 'manual', 0, :now FROM policies"),
            {"now": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())})
    busy = cli("cycle", "run", "CycleP", "--wait")
    assert busy.code == 2 and "is still running" in busy.err
    with sa.create_engine(api.db_url).begin() as conn:
        conn.execute(sa.text("DELETE FROM cycle_runs"))
    honest.start()
    liar.start()
    out = _json(cli("cycle", "run", "CycleP", "--wait", "--json"))
    assert out["state"] == "Completed", out
    states = {s["name"]: s["state"] for s in out["steps"]}
    assert states["install"] == "Completed" and states["verify"] == "Completed"
    verify = next(s for s in out["steps"] if s["name"] == "verify")
    flagged = verify["details"]["still_missing"]
    assert {(f["endpoint"], f["patch"]) for f in flagged} == {("WS-B", "KB5900110"),
                                                             ("WS-B", ZIP)}
    assert all(f["state"] == "Installed, still missing" and f["reason"] for f in flagged)
    report = next(s for s in out["steps"] if s["name"] == "report")
    assert report["details"]["rings"] == [{
        "ring": "all", "approved_patches": 2, "approved_pairs": 4, "installed": 4,
        "failed": 0, "pending_reboot": 0, "still_missing": 2, "note": None}]
    # The flag is on the item's trail too, and the honest endpoint is patched.
    job = _json(cli("jobs", "show", str(out["install_job_id"]), "--json"))
    assert job["trigger"] == "cycle"
    liar_items = [i for i in job["items_detail"] if i["endpoint"] == "WS-B"]
    assert all(i["events"][-1]["message"].startswith("Installed, still missing: ")
               for i in liar_items)
    missing = {(r["endpoint"], r["kb"] or r["package_id"])
               for r in _json(cli("missing", "--json"))}
    assert ("WS-A", "KB5900110") not in missing and ("WS-B", "KB5900110") in missing
    table = cli("cycle", "show", str(out["run"]))
    assert table.code == 0 and "verify" in table.out


def test_rings_gate_passes_then_a_failing_pilot_halts_the_cycle(
        api: Api, fleet: Callable[..., SimAgent], cli: Any) -> None:
    for group in ("Pilot", "Office"):
        assert cli("groups", "add", group).code == 0
    assert cli("policies", "add", "CycleR", "--patch-server", "local", "--groups",
               "Pilot,Office").code == 0
    assert cli("cycle", "rings", "add", "CycleR", "pilot", "--groups", "Pilot").code == 0
    assert cli("cycle", "rings", "add", "CycleR", "broad", "--groups", "Office",
               "--min-success-rate", "100").code == 0
    rings = _json(cli("cycle", "rings", "list", "CycleR", "--json"))
    assert [(r["name"], r["groups"]) for r in rings] == [("pilot", ["Pilot"]),
                                                          ("broad", ["Office"])]
    assert cli("cycle", "rings", "add", "CycleR", "pilot", "--groups", "Pilot").code == 2
    pilot = fleet(inventory("WS-P", 5800, ["KB5890010"], [
        program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov")],
        {"exit_codes": {"7zip.7zip": 1603}}), group="Pilot")
    broad = fleet(inventory("WS-O", 5800, ["KB5890010"], [
        program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov")]), group="Office")
    for agent in (pilot, broad):
        agent.runner.upload_inventory()
        agent.start()
    assert cli("approve", "KB5900110", "--groups", "Pilot,Office").code == 0
    first = _json(cli("cycle", "run", "CycleR", "--wait", "--json"))
    assert first["state"] == "Completed", first
    steps = {s["name"]: s for s in first["steps"]}
    assert [s["name"] for s in first["steps"]] == [
        "sync", "scan", "approve", "install:pilot", "gate:broad", "install:broad", "verify",
        "report"]
    assert steps["gate:broad"]["summary"] == (
        "ring pilot: 1 of 1 installs succeeded (100 %), gate 100 % passed")
    assert [(p["ring"], p["endpoints"]) for p in first["plan"]] == [
        ("pilot", ["WS-P"]), ("broad", ["WS-O"])]
    # Second cycle: 7-Zip fails on the pilot, so the broad ring never gets it.
    assert cli("approve", ZIP, "--groups", "Pilot,Office").code == 0
    result = cli("cycle", "run", "CycleR", "--wait", "--json")
    assert result.code == 1, result.err
    second = json.loads(result.out)
    assert second["state"] == "Failed"
    steps = {s["name"]: s for s in second["steps"]}
    assert "install:broad" not in steps and steps["gate:broad"]["state"] == "Failed"
    assert second["message"] == steps["gate:broad"]["summary"] and "halted" in second["message"]
    assert "0 of 1 installs succeeded (0 %)" in second["message"]
    rings_report = steps["report"]["details"]["rings"]
    assert [(r["ring"], r["failed"], r["note"]) for r in rings_report] == [
        ("pilot", 1, None), ("broad", 0, second["message"])]
    with sa.create_engine(api.db_url).connect() as conn:  # nothing was sent to WS-O
        sent = conn.execute(sa.text(
            "SELECT COUNT(*) FROM install_job_items i JOIN endpoints e ON e.id = i.endpoint_id "
            "JOIN patches p ON p.id = i.patch_id WHERE e.hostname = 'WS-O' "
            "AND p.package_id = '7zip.7zip'")).scalar_one()
    assert sent == 0
