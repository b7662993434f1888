"""`patchflow serve` end to end, started once as a real process (loopback ports, a temp home):
its local Prefect server, the deployments generated from the database with their schedules,
a schedule edited through the CLI reaching the served deployment without a restart, "run if
missed" at start-up, overlapping runs of one deployment queued, a deployment run cancelled by
`patchflow sync NAME --stop`, and a clean Ctrl+C.

Everything shares one serve process because starting it costs ~10 s (Prefect server start-up);
the tests run in file order and each states what it leaves behind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.httpserver import FileServer, serve_files
from tests.support.paths import REPO
from tests.support.polling import free_port, wait_for

ROOT = REPO
REFRESH = 2  # [schedule] refresh_seconds for this test: edits show up within seconds
TIMEZONE = "Europe/Berlin"


@dataclass
class Served:
    home: Path
    env: dict[str, str]
    api_url: str
    proc: subprocess.Popen[bytes]
    log: Path
    upstream: FileServer
    ready_seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT,
                                env=self.env, capture_output=True, text=True, timeout=120)
        if check:
            assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def client(self) -> Any:
        from prefect.client.orchestration import get_client

        return get_client(sync_client=True)

    def db(self) -> Any:
        import sqlalchemy as sa

        return sa.create_engine(self.env["PATCHFLOW_DATABASE_URL"])


def _inventory(host: str) -> dict[str, Any]:
    return {
        "schema_version": 1, "hostname": host, "domain": "corp.example",
        "os": {"name": "Windows 11 Pro", "display_version": "23H2", "build": 22631,
               "ubr": 5800, "arch": "x64", "language": "en-US", "hotpatch": False,
               "installation_type": "Client"},
        "programs": [], "updates": [], "pending_reboot": False,
        "collected_at": "2026-11-29T10:00:00Z",
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("serve") / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    prefect_port, https_port = free_port(), free_port()
    env.update({
        "PATCHFLOW_HOME": str(home),
        "PATCHFLOW_DATABASE_URL": f"sqlite:///{home / 'patchflow.db'}",
        "PATCHFLOW_INSTANCE": "lab",  # in every deployment's name and tags
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PYTHONPATH": str(ROOT),
    })
    with serve_files() as upstream:
        upstream.delay = 40.0  # the MSRC feed answers slowly: a sync stays running
        upstream.files["/updates"] = b'{"value": []}'
        served = Served(home, env, f"http://127.0.0.1:{prefect_port}/api", None,  # type: ignore[arg-type]
                        home / "serve.log", upstream, 0.0, {"https": https_port})
        served.cli("init", "--host", "localhost")
        served.cli("server", "add", "local", "--host", "localhost", "--msrc-source",
                   upstream.url + "/", "--winget-source", "none")
        served.cli("server", "schedule", "local", "--frequency", "weekly", "--weekday",
                   "tuesday", "--at", "22:00")
        served.cli("groups", "add", "lab")
        inventory = home / "inventory.json"
        inventory.write_text(json.dumps([_inventory("WS-01")]))
        served.cli("endpoints", "import", str(inventory), "--group", "lab")
        # "weekly" is due every day of the week in turn: yesterday's weekday, so its last due
        # time is in the past; "quiet" has a schedule but not "run if missed".
        yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).strftime("%A").lower()
        served.cli("policies", "add", "weekly", "--patch-server", "local", "--groups", "lab",
                   "--scan-weekday", yesterday, "--scan-at", "00:00", "--run-if-missed")
        served.cli("policies", "add", "quiet", "--patch-server", "local", "--scan-weekday",
                   yesterday, "--scan-at", "00:00", "--scan-every-weeks", "2")
        # Both schedules were set two weeks ago (as if patchflow had been down since).
        import sqlalchemy as sa

        engine = served.db()
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE policies SET scan_start = :t"),
                         {"t": (dt.datetime.now(dt.UTC) - dt.timedelta(days=14))
                          .replace(tzinfo=None)})
        engine.dispose()
        with (home / "patchflow.toml").open("a", encoding="utf-8") as config:
            config.write(f'\n[schedule]\ntimezone = "{TIMEZONE}"\nrefresh_seconds = {REFRESH}\n')

        started = time.monotonic()
        with served.log.open("wb") as log:
            served.proc = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port",
                 str(https_port), "--prefect-port", str(prefect_port)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for("`patchflow serve` to be ready",
                  lambda: "scheduler ready" in served.output() or served.proc.poll() is not None,
                  timeout=150)
            assert served.proc.poll() is None, served.output()
            served.ready_seconds = time.monotonic() - started
            print(f"patchflow serve ready in {served.ready_seconds:.1f} s")
            with temporary_settings(updates={PREFECT_API_URL: served.api_url}):
                yield served
        finally:
            if served.proc.poll() is None:
                served.proc.send_signal(signal.SIGINT)
                try:
                    served.proc.wait(60)
                except subprocess.TimeoutExpired:
                    served.proc.kill()
                    served.proc.wait(10)


def _deployment(served: Served, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    with served.client() as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def _rrule(deployment: Any) -> str:
    assert len(deployment.schedules) == 1
    return str(deployment.schedules[0].schedule.rrule)


def _runs(served: Served, deployment_id: Any) -> list[Any]:
    """The deployment's runs except the future ones Prefect's scheduler creates ahead."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    with served.client() as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(
            id=DeploymentFilterId(any_=[deployment_id])))
    return [r for r in runs if not (r.auto_scheduled and r.expected_start_time > soon)]


def _state(served: Served, run_id: Any) -> Any:
    with served.client() as client:
        return client.read_flow_run(run_id).state


def test_local_prefect_server_and_deployments_from_the_database(served: Served) -> None:
    import httpx

    # The HTTPS API runs in the same process.
    health = httpx.get(f"https://127.0.0.1:{served.extra['https']}/api/v1/health", verify=False)
    assert health.status_code == 200
    out = served.output()
    assert f"Prefect UI: {served.api_url.removesuffix('/api')}" in out
    assert (served.home / "prefect").is_dir()  # PREFECT_HOME under PATCHFLOW_HOME

    sync = _deployment(served, "patchflow-sync/server-local@lab")
    assert sync is not None
    rule = _rrule(sync)
    assert "FREQ=WEEKLY;BYDAY=TU;BYHOUR=22;BYMINUTE=0" in rule
    assert sync.schedules[0].schedule.timezone == TIMEZONE
    assert sync.parameters == {"server_name": "local"}
    assert sync.global_concurrency_limit.limit == 1
    assert str(sync.concurrency_options.collision_strategy).endswith("ENQUEUE")
    assert set(sync.tags) == {"patchflow", "sync", "instance:lab", "patchflow-serve"}
    assert not sync.paused

    scan = _deployment(served, "patchflow-scan/policy-weekly@lab")
    assert scan.parameters == {"selection": {"policy": "weekly"}, "trigger": "scheduled"}
    start = (dt.datetime.now(dt.UTC) - dt.timedelta(days=14)).strftime("%Y%m%d")
    assert f"DTSTART:{start}T000000" in _rrule(scan) and "INTERVAL=1;" in _rrule(scan)
    assert "INTERVAL=2;" in _rrule(_deployment(served, "patchflow-scan/policy-quiet@lab"))
    # No report schedule yet.
    assert _deployment(served, "patchflow-report/reports@lab") is None


def test_run_if_missed_at_start_up(served: Served) -> None:
    import sqlalchemy as sa

    scan = _deployment(served, "patchflow-scan/policy-weekly@lab")
    runs = wait_for("the catch-up scan run", lambda: _runs(served, scan.id), timeout=30)
    assert len(runs) == 1 and "run-if-missed" in runs[0].tags
    assert "policy weekly: the scan due" in served.output()
    final = wait_for("the catch-up scan to finish",
                  lambda: (s := _state(served, runs[0].id)).is_final() and s, timeout=90)
    assert final.is_completed(), final
    engine = served.db()
    with engine.connect() as conn:
        # The import's own rescan (trigger "inventory") is not a scheduled run.
        scans = conn.execute(sa.text("SELECT trigger, status, flow_run_id FROM scans "
                                     "WHERE trigger <> 'inventory'")).all()
        last = dict(conn.execute(sa.text(
            "SELECT name, last_scheduled_scan_at FROM policies")).all())
    engine.dispose()
    # (`endpoints import` rescans the imported endpoints itself: trigger "inventory")
    assert [s for s in scans if s[0] != "inventory"] == [
        ("scheduled", "completed", str(runs[0].id))]
    assert last["weekly"] is not None and last["quiet"] is None
    # "quiet" has no run-if-missed: nothing was started for it.
    assert _runs(served, _deployment(served, "patchflow-scan/policy-quiet@lab").id) == []


def test_schedule_edits_reach_the_served_deployments(served: Served) -> None:
    sync_id = _deployment(served, "patchflow-sync/server-local@lab").id
    served.cli("server", "schedule", "local", "--frequency", "monthly", "--weekday",
               "wednesday", "--at", "05:15", "--week-of-month", "2")
    served.cli("report", "schedule", "--weekday", "friday", "--at", "07:30", "--kind",
               "missing")
    served.cli("policies", "edit", "quiet", "--clear-schedule")
    rule = wait_for("the edited sync schedule", lambda: (
        "FREQ=MONTHLY;BYDAY=WE;BYSETPOS=2;BYHOUR=5;BYMINUTE=15" in
        _rrule(_deployment(served, "patchflow-sync/server-local@lab"))), timeout=30)
    assert rule
    # Updated, not replaced.
    assert _deployment(served, "patchflow-sync/server-local@lab").id == sync_id
    report = wait_for("the report deployment",
                   lambda: _deployment(served, "patchflow-report/reports@lab"))
    assert "FREQ=WEEKLY;INTERVAL=1;BYDAY=FR;BYHOUR=7;BYMINUTE=30" in _rrule(report)
    assert report.parameters == {"kinds": ["missing"], "created_by": "schedule"}
    wait_for("the cleared scan deployment to go",
          lambda: _deployment(served, "patchflow-scan/policy-quiet@lab") is None, timeout=30)
    assert "removed patchflow-scan/policy-quiet@lab" in served.output()


def test_overlapping_runs_queue_and_stop_cancels_the_deployment_run(served: Served) -> None:
    import sqlalchemy as sa

    deployment = _deployment(served, "patchflow-sync/server-local@lab")
    with served.client() as client:
        first = client.create_flow_run_from_deployment(deployment.id)
    wait_for("the first sync to run", lambda: _state(served, first.id).is_running(), timeout=60)
    wait_for("the sync to reach the slow upstream", lambda: served.upstream.requests, timeout=60)
    with served.client() as client:
        second = client.create_flow_run_from_deployment(deployment.id)
    # The runner tries to start it and Prefect sends it back to wait for the slot.
    waiting = wait_for("the second run to wait for the concurrency slot", lambda: (
        (s := _state(served, second.id)).name == "AwaitingConcurrencySlot" and s), timeout=30)
    assert waiting.is_scheduled() and _state(served, first.id).is_running()
    with served.client() as client:
        from prefect.states import Cancelled

        client.set_flow_run_state(second.id, Cancelled(), force=True)

    engine = served.db()
    with engine.connect() as conn:
        status, run_id = conn.execute(sa.text(
            "SELECT sync_status, sync_flow_run_id FROM patch_servers")).one()
    assert (status, run_id) == ("Running", str(first.id))
    stop = served.cli("sync", "local", "--stop")
    assert "stop requested" in stop.stdout
    final = wait_for("the deployment run to be cancelled",
                  lambda: (s := _state(served, first.id)).is_final() and s, timeout=60)
    assert final.is_cancelled(), final
    with engine.connect() as conn:
        status, message = wait_for("the server status to say Stopped", lambda: (
            row := conn.execute(sa.text(
                "SELECT sync_status, sync_message FROM patch_servers")).one()
        )[0] == "Stopped" and row, timeout=30)
    engine.dispose()
    assert "stopped by request" in message
    listed = json.loads(served.cli("server", "list", "--json").stdout)
    assert listed[0]["sync_status"] == "Stopped"


def test_ctrl_c_stops_cleanly(served: Served) -> None:
    served.proc.send_signal(signal.SIGINT)
    assert served.proc.wait(60) == 0
    out = served.output()
    assert "Traceback" not in out, out[-3000:]
    assert "patchflow stopped" in out
    # Prefect's logging set-up did not silence uvicorn's (access log, shutdown lines).
    assert '"GET /api/v1/health HTTP/1.1" 200' in out and "Shutting down" in out
    assert "Error logging to API" not in out, out[-3000:]
    # Prefect logs the killed task of the cancelled run as an error; patchflow logs none.
    assert not re.search(r"ERROR +\| patchflow", out), out[-3000:]
