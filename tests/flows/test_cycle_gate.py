"""Manual ring gates and scheduled cycles, on SQLite and MariaDB.

Manual gate: the real HTTPS server on loopback, simulated agents, the sample catalog; the cycle
runs (in a thread, as the detached `cycle run` process would) until Prefect pauses it before
the gated ring, then `patchflow cycle resume` answers through the Prefect API: resumed, the
ring installs; rejected, the cycle halts with the reason and the ring gets nothing.

Scheduled cycle: `patchflow cycle schedule` turns the policy's scan deployment into a
`patchflow-cycle` deployment with the policy's schedule, applied by the real deployment
watcher to a real Prefect server; a run of the flow that its schedule did not start is a
manual run, whatever its parameters say.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.fixtures.agent.harness import Api
from tests.fixtures.install.agents import SimAgent, inventory, program
from tests.fixtures.install.loopback import (
    sim_fleet,
    synced_api_on_both_databases,
)
from tests.patchflow.reporting.test_reports_mail import _set as set_mail
from tests.support.polling import wait_for
from tests.support.smtp_server import PASSWORD as SMTP_PASSWORD
from tests.support.smtp_server import Smtp, smtp_server

api = synced_api_on_both_databases("cycle-gate", {
    "install": {"poll_seconds": 0.1, "retry_delay_s": 0, "item_timeout_s": 30},
    "cycle": {"verify_wait_s": 20, "verify_poll_s": 0.2, "gate_poll_s": 1},
})


@pytest.fixture
def fleet(api: Api, tmp_path: Path) -> Iterator[Callable[..., SimAgent]]:
    with sa.create_engine(api.db_url).begin() as conn:
        for table in ("cycle_runs", "patch_approvals", "patch_declines", "approval_rules",
                      "policy_rings"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
    with sim_fleet(api, tmp_path) as make:
        yield make


def _json(result: Any, code: int = 0) -> Any:
    assert result.code == code, result.err
    return json.loads(result.out)


def _gated_policy(fleet: Callable[..., SimAgent], cli: Any) -> None:
    """Policy GateP: ring pilot (WS-P), then ring broad (WS-O) behind a manual gate."""
    for group in ("Pilot", "Office"):
        assert cli("groups", "add", group).code == 0
    assert cli("policies", "add", "GateP", "--patch-server", "local", "--groups",
               "Pilot,Office").code == 0
    assert cli("cycle", "rings", "add", "GateP", "pilot", "--groups", "Pilot").code == 0
    bad = cli("cycle", "rings", "add", "GateP", "broad", "--groups", "Office", "--gate", "vote")
    assert bad.code == 2 and "invalid --gate 'vote'" in bad.err
    assert cli("cycle", "rings", "add", "GateP", "broad", "--groups", "Office",
               "--gate", "manual").code == 0
    rings = _json(cli("cycle", "rings", "list", "GateP", "--json"))
    assert [(r["name"], r["gate"]) for r in rings] == [("pilot", "rate"), ("broad", "manual")]
    for host, group in (("WS-P", "Pilot"), ("WS-O", "Office")):
        agent = fleet(inventory(host, 5800, ["KB5890010"], [
            program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov")]), group=group)
        agent.runner.upload_inventory()
        agent.start()
    assert cli("approve", "KB5900110", "--groups", "Pilot,Office").code == 0


def _start_cycle() -> tuple[threading.Thread, list[Any]]:
    from flows.cycle import cycle

    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(cycle("GateP", started_by="test"))
        except Exception as exc:  # the assertion below shows it
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def _paused_run(api: Api, thread: threading.Thread, outcome: list[Any]) -> int:
    deadline = time.monotonic() + 180
    with sa.create_engine(api.db_url).connect() as conn:
        while time.monotonic() < deadline:
            row = conn.execute(sa.text("SELECT id, state FROM cycle_runs ORDER BY id DESC")
                               ).first()
            conn.rollback()
            if row and row.state == "Paused":
                return int(row.id)
            assert thread.is_alive(), outcome
            time.sleep(0.3)
    raise AssertionError("the cycle never paused at the manual gate")


def prefect_paused(flow_run_id: str) -> None:
    """The run record says Paused a moment before Prefect has paused the flow run: wait for
    Prefect's own state before answering the gate."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        wait_for("Prefect to pause the flow run",
                 lambda: client.read_flow_run(flow_run_id).state.is_paused(), timeout=60,
                 every=0.3)


def _items_on(api: Api, host: str) -> int:
    with sa.create_engine(api.db_url).connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT COUNT(*) FROM install_job_items i JOIN endpoints e ON e.id = i.endpoint_id "
            "WHERE e.hostname = :host"), {"host": host}).scalar_one())


def test_manual_gate_pauses_until_resumed_by_the_cli(
        api: Api, fleet: Callable[..., SimAgent], cli: Any) -> None:
    _gated_policy(fleet, cli)
    thread, outcome = _start_cycle()
    run = _paused_run(api, thread, outcome)
    shown = _json(cli("cycle", "show", str(run), "--json"))
    assert shown["state"] == "Paused"
    steps = {s["name"]: s for s in shown["steps"]}
    assert steps["install:pilot"]["state"] == "Completed"
    assert steps["gate:broad"]["state"] == "Waiting"
    assert steps["gate:broad"]["summary"].startswith(
        "manual gate; ring pilot: 1 of 1 installs succeeded (100 %): waiting for an "
        f"administrator (`patchflow cycle resume {run}`")
    assert _items_on(api, "WS-O") == 0  # nothing goes to the gated ring while it waits
    prefect_paused(shown["flow_run_id"])  # Prefect itself has the run paused
    # One cycle per policy: a paused run still holds the policy.
    busy = cli("cycle", "run", "GateP", "--wait")
    assert busy.code == 2 and "is still paused" in busy.err
    resumed = _json(cli("cycle", "resume", str(run), "--json"))
    assert resumed == {"run": run, "decision": "resume", "reason": None}
    thread.join(180)
    assert not thread.is_alive() and isinstance(outcome[0], dict), outcome
    out = _json(cli("cycle", "show", str(run), "--json"))
    assert out["state"] == "Completed", out
    assert [s["name"] for s in out["steps"]] == [
        "sync", "scan", "approve", "install:pilot", "gate:broad", "install:broad", "verify",
        "report"]
    gate = next(s for s in out["steps"] if s["name"] == "gate:broad")
    assert gate["state"] == "Completed"
    assert gate["summary"].startswith("manual gate before ring broad: resumed by cli:")
    assert _items_on(api, "WS-O") == 1
    again = cli("cycle", "resume", str(run))
    assert again.code == 2 and "is not waiting at a gate (it is completed)" in again.err
    audit = _json(cli("audit", "list", "--action", "cycle.", "--json"))
    assert any(a["action"] == "cycle.resume" and a["target"] == str(run) for a in audit)


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    """A real SMTP server on loopback (aiosmtpd), as the report mail tests use."""
    yield from smtp_server()


def test_manual_gate_rejected_halts_the_cycle(
        api: Api, fleet: Callable[..., SimAgent], cli: Any, smtp: Smtp,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With mail set up and `[cycle] email`, the waiting gate sends a notice and the halted
    cycle's reason reaches the administrators with the regular reports."""
    from patchflow import config

    _gated_policy(fleet, cli)
    monkeypatch.setenv("PATCHFLOW_SMTP_PASSWORD", SMTP_PASSWORD)
    set_mail(cli, smtp.port)
    config.write_config({"cycle": {"email": "ops@corp.example"}})
    try:
        thread, outcome = _start_cycle()
        run = _paused_run(api, thread, outcome)
        # The notice goes out before the run says Paused: it is there already.
        assert len(smtp.messages) == 1
        _sender, to, notice = smtp.messages[0]
        assert to == ["ops@corp.example"]
        assert notice["Subject"] == (f"Patch cycle {run} of GateP waits at the gate before "
                                     "ring broad")
        assert f"patchflow cycle resume {run}" in notice.get_body(("plain",)).get_content()
        rejected = cli("cycle", "resume", str(run), "--reject", "--reason",
                       "pilot broke the <printer> driver")
        assert rejected.code == 0, rejected.err
        thread.join(180)
    finally:
        config.write_config({"cycle": {"email": None}})
    assert not thread.is_alive() and outcome, outcome
    out = _json(cli("cycle", "show", str(run), "--json"))
    assert out["state"] == "Failed"
    steps = {s["name"]: s for s in out["steps"]}
    assert "install:broad" not in steps and steps["gate:broad"]["state"] == "Failed"
    assert out["message"] == steps["gate:broad"]["summary"]
    assert out["message"].startswith("manual gate before ring broad: rejected by cli:")
    assert out["message"].endswith(": pilot broke the <printer> driver: cycle halted")
    assert [(r["ring"], r["note"]) for r in steps["report"]["details"]["rings"]] == [
        ("pilot", None), ("broad", out["message"])]
    assert _items_on(api, "WS-P") == 1 and _items_on(api, "WS-O") == 0
    audit = _json(cli("audit", "list", "--action", "cycle.", "--json"))
    assert any(a["action"] == "cycle.reject" and a["target"] == str(run) for a in audit)
    # The report step: the regular reports, mailed under the halted run's reason.
    assert steps["report"]["summary"].endswith("; mailed to ops@corp.example")
    assert len(smtp.messages) == 2
    _sender, to, mailed = smtp.messages[1]
    assert mailed["Subject"] == f"Patch cycle {run} of GateP: halted"
    html = mailed.get_body(("html",)).get_content()
    assert "pilot broke the &lt;printer&gt; driver" in html and "<printer>" not in html
    assert "Compliance" in html
    assert {a.get_filename() for a in mailed.iter_attachments()} >= {"missing.csv"}


def test_scheduled_cycle_is_a_deployment_with_the_policys_schedule(
        api: Api, fleet: Callable[..., SimAgent], cli: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio
    from prefect.client.orchestration import get_client
    from prefect.runner import Runner

    from deployments.build import load_specs
    from deployments.service import DeploymentWatcher
    from flows.cycle import cycle

    monkeypatch.setenv("PATCHFLOW_INSTANCE", "hq")
    assert cli("groups", "add", "Lab").code == 0
    assert cli("policies", "add", "Nightly", "--patch-server", "local", "--groups", "Lab",
               "--auto-install").code == 0
    unscheduled = cli("cycle", "schedule", "Nightly")
    assert unscheduled.code == 2 and "has no schedule" in unscheduled.err
    assert cli("policies", "edit", "Nightly", "--scan-weekday", "tuesday", "--scan-at",
               "22:30", "--scan-every-weeks", "2", "--run-if-missed").code == 0
    scan = next(s for s in load_specs() if s.policy == "Nightly")
    assert scan.flow == "scan"
    done = cli("cycle", "schedule", "Nightly")
    assert done.code == 0 and "installs unattended" in done.out
    spec = next(s for s in load_specs() if s.policy == "Nightly")
    assert spec.flow == "cycle" and spec.full_name == "patchflow-cycle/cycle-Nightly@hq"
    assert spec.rrule == scan.rrule  # the policy's schedule, not a second one
    assert spec.parameters == {"policy": "Nightly", "trigger": "scheduled"}

    async def apply() -> list[str]:
        watcher = DeploymentWatcher(Runner(name="test-cycle-schedule"), "UTC")
        return await watcher.reconcile()

    changes = anyio.run(apply)
    assert any("patchflow-cycle/cycle-Nightly@hq" in c for c in changes), changes
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("patchflow-cycle/cycle-Nightly@hq")
        assert deployment.parameters == {"policy": "Nightly", "trigger": "scheduled"}
        rrule = deployment.schedules[0].schedule.rrule
        assert "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU;BYHOUR=22;BYMINUTE=30" in rrule
        assert deployment.global_concurrency_limit.limit == 1
        client.delete_deployment(deployment.id)
    # A run its schedule did not start (like a Quick run) is manual, whatever it says.
    cycle("Nightly", dry_run=True, trigger="scheduled")
    runs = _json(cli("cycle", "list", "--policy", "Nightly", "--json"))
    assert [r["trigger"] for r in runs] == ["manual"]
    assert cli("cycle", "schedule", "Nightly", "--disable").code == 0
    assert next(s for s in load_specs() if s.policy == "Nightly").flow == "scan"
