"""Deployments generated from the database (names, schedules, parameters), the report schedule
command, and deployments/prefect.yaml for work pools: the shipped example and the exported
file are checked against the real flows (entrypoints, parameters, schedules), then deployed
with the real `prefect deploy --all` and one run executed by a real process worker."""

from __future__ import annotations

import datetime as dt
import inspect
import os
import subprocess
import sys
import uuid
import zoneinfo
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.paths import REPO

ROOT = REPO
EXAMPLE = ROOT / "deployments" / "prefect.yaml"


# --- specs from the database ----------------------------------------------------------------


def test_specs_follow_the_stored_schedules(cli: Any, home: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from deployments.build import load_specs

    monkeypatch.setenv("PATCHFLOW_INSTANCE", "hq")

    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h").code == 0
    assert cli("server", "add", "branch", "--host", "h").code == 0
    assert cli("server", "schedule", "local", "--frequency", "monthly", "--weekday", "tuesday",
               "--at", "22:30", "--week-of-month", "5").code == 0
    assert cli("groups", "add", "lab").code == 0
    r = cli("policies", "add", "Lab / night (EU)", "--patch-server", "local", "--groups", "lab",
            "--scan-weekday", "sunday", "--scan-at", "03:00", "--scan-every-weeks", "3")
    assert r.code == 0, r.err
    assert cli("policies", "add", "unscheduled", "--patch-server", "local").code == 0

    specs = {s.name: s for s in load_specs()}
    # "branch" and "unscheduled" have no schedule: no deployment; no report schedule either.
    # The vulnerability feeds are synced daily by default.
    scan_name = "policy-Lab-night-EU-" + _hash("Lab / night (EU)") + "@hq"
    assert set(specs) == {"server-local@hq", scan_name, "feeds@hq"}
    sync = specs["server-local@hq"]
    assert sync.flow == "sync" and sync.parameters == {"server_name": "local"}
    assert sync.full_name == "patchflow-sync/server-local@hq"
    assert set(sync.tags) == {"patchflow", "sync", "instance:hq", "patchflow-serve"}
    assert set(specs[scan_name].tags) == {"patchflow", "scan", "instance:hq", "patchflow-serve"}
    assert sync.rrule.endswith("FREQ=MONTHLY;BYDAY=TU;BYSETPOS=-1;BYHOUR=22;BYMINUTE=30;"
                               "BYSECOND=0")
    assert sync.timezone == "UTC"
    scan = next(s for s in specs.values() if s.flow == "scan")
    assert scan.parameters == {"selection": {"policy": "Lab / night (EU)"},
                               "trigger": "scheduled"}
    assert "INTERVAL=3;BYDAY=SU;BYHOUR=3;BYMINUTE=0" in scan.rrule
    assert scan.rrule.startswith("DTSTART:" + dt.datetime.now(dt.UTC).strftime("%Y%m%d"))
    assert scan.policy == "Lab / night (EU)"
    before = {n: s.fingerprint() for n, s in specs.items()}
    assert {s.name: s.fingerprint() for s in load_specs()} == before  # stable

    from patchflow import config

    config.write_config({"schedule": {"timezone": "America/New_York"}})
    assert {s.timezone for s in load_specs()} == {"America/New_York"}
    config.write_config({"schedule": {"timezone": "Mars/Olympus"}})
    r = cli("deployments", "list")
    assert r.code == 2 and "Mars/Olympus" in r.err and "IANA" in r.err


def _hash(name: str) -> str:
    import hashlib

    return hashlib.sha256(name.encode()).hexdigest()[:6]


def test_report_schedule_command(cli: Any, home: Path) -> None:
    import json

    from deployments.build import load_specs

    assert cli("init").code == 0
    assert cli("report", "schedule").out.startswith("no report schedule")
    assert cli("report", "schedule", "--weekday", "Friday", "--at", "07:30", "--kind",
               "compliance,missing").code == 0
    shown = json.loads(cli("report", "schedule", "--json").out)
    assert shown == {"weekday": "friday", "at": "07:30", "kinds": ["missing", "compliance"],
                     "email": []}
    assert cli("report", "schedule", "--at", "08:15").code == 0  # the rest is kept
    (report,) = [s for s in load_specs() if s.flow == "report"]
    from deployments.build import instance_name

    assert report.name == f"reports@{instance_name()}"
    assert report.full_name == f"patchflow-report/reports@{instance_name()}"
    assert report.parameters == {"kinds": ["missing", "compliance"], "created_by": "schedule"}
    assert "FREQ=WEEKLY;INTERVAL=1;BYDAY=FR;BYHOUR=8;BYMINUTE=15" in report.rrule

    for args, message in [
        (("--weekday", "someday", "--at", "07:30"), "invalid weekday"),
        (("--at", "25:00"), "invalid time"),
        (("--kind", "everything"), "unknown report kind"),
        (("--email", "ops@corp.example"), "SMTP is not configured"),
        (("--clear", "--at", "07:00"), "cannot be combined"),
    ]:
        r = cli("report", "schedule", *args)
        assert r.code == 2 and message in r.err, (args, r.err)
    assert json.loads(cli("report", "schedule", "--json").out)["at"] == "08:15"
    assert cli("report", "schedule", "--clear").code == 0
    assert [s for s in load_specs() if s.flow == "report"] == []


def test_instance_names_and_slugs(sqlite_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two installations on one Prefect server differ by instance; names stay readable and
    within what Prefect accepts, and two names differing in punctuation never collide."""
    import socket

    from deployments.build import deployment_name, instance_name, slug
    from patchflow import config
    from patchflow.config import ConfigError

    monkeypatch.delenv("PATCHFLOW_INSTANCE", raising=False)
    import re

    default = instance_name()  # the short host name, made safe, or "default"
    assert re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,39}", default)
    assert default in (socket.gethostname().split(".")[0].lower(), "default")
    config.write_config({"prefect": {"instance": "site-b"}})
    assert instance_name() == "site-b"
    monkeypatch.setenv("PATCHFLOW_INSTANCE", "site-a")  # the environment wins
    assert deployment_name("policy", "workstations") == "policy-workstations@site-a"
    assert deployment_name("reports", None) == "reports@site-a"
    for bad in ("a/b", "-x", "x" * 41, "two words", "é"):
        monkeypatch.setenv("PATCHFLOW_INSTANCE", bad)
        with pytest.raises(ConfigError, match=r"\[prefect\] instance"):
            instance_name()
    assert slug("Lab / night") != slug("Lab - night") and "/" not in slug("Lab / night")
    long = slug("x" * 300)
    assert len(long) <= 60 and long != slug("x" * 299)
    for name in ("a%b", "a&b", "a<b>", "100%"):
        assert not set(slug(name)) & set("/%&<>@")


def test_every_flow_is_prefixed_and_served_under_its_full_name() -> None:
    """The naming rule for a shared Prefect server: every flow patchflow defines (in any
    module of flows/) is called `patchflow-...`."""
    import importlib
    import pkgutil

    from prefect import Flow

    import flows
    from deployments.build import DeploymentSpec
    from deployments.patchflow_flows import FLOWS

    found = {}
    for info in pkgutil.iter_modules(flows.__path__):
        module = importlib.import_module(f"flows.{info.name}")
        found.update({f.name: module.__name__ for f in vars(module).values()
                      if isinstance(f, Flow)})
    assert {"patchflow-sync", "patchflow-scan", "patchflow-report", "patchflow-install"} <= \
        set(found)
    assert [n for n in found if not n.startswith("patchflow-")] == [], found
    for key, flow in FLOWS.items():
        spec = DeploymentSpec(name="x@y", flow=key, parameters={}, rrule="", timezone="UTC",
                              description="")
        assert spec.full_name == f"{flow.name}/x@y"


def test_report_kinds_match_the_report_flow() -> None:
    """One kinds table: the schedule stores exactly the kinds the report flow accepts."""
    from patchflow.reporting import report_schedule
    from patchflow.reporting import service as reporting

    assert report_schedule.KINDS is reporting.KINDS
    assert report_schedule.parse_kinds("all") == reporting.parse_kinds("all") == \
        list(reporting.KINDS)


# --- prefect.yaml ---------------------------------------------------------------------------


def check_prefect_yaml(text: str) -> list[dict[str, Any]]:
    """What `prefect deploy` would need: entrypoints that load the real flow functions,
    parameters the flow accepts (and every required one), schedules Prefect parses."""
    from dateutil.rrule import rrulestr
    from prefect.cli.deploy._models import PrefectYamlModel
    from prefect.client.schemas.schedules import RRuleSchedule
    from prefect.flows import load_flow_from_entrypoint

    import flows.feeds
    import flows.report
    import flows.scan
    import flows.sync

    real = {"sync": flows.sync.sync, "scan": flows.scan.scan, "report": flows.report.report_flow,
            "feeds": flows.feeds.feeds_sync}
    document = yaml.safe_load(text)
    PrefectYamlModel.model_validate(document)
    deployments = document["deployments"]
    assert deployments
    for deployment in deployments:
        path, name = deployment["entrypoint"].split(":")
        saved_path = list(sys.path)
        try:
            loaded = load_flow_from_entrypoint(str(ROOT / path) + ":" + name)
            # Prefect imported the file under its stem with its folder first on sys.path: it
            # must not have replaced the `flows` package (as a file named flows.py did).
            assert hasattr(sys.modules["flows"], "__path__")
        finally:
            sys.path[:] = saved_path
        assert loaded.fn is real[name].fn and loaded.name == real[name].name
        assert loaded.on_cancellation_hooks or name == "report"  # status hooks attached
        signature = inspect.signature(loaded.fn)
        params = deployment.get("parameters") or {}
        assert set(params) <= set(signature.parameters), deployment["name"]
        required = {p for p, v in signature.parameters.items() if v.default is v.empty}
        assert required <= set(params), deployment["name"]
        loaded.validate_parameters(params)
        for schedule in deployment["schedules"]:
            parsed = RRuleSchedule(rrule=schedule["rrule"], timezone=schedule["timezone"])
            zoneinfo.ZoneInfo(schedule["timezone"])
            assert rrulestr(parsed.rrule).after(dt.datetime(2026, 1, 1)) is not None
        assert deployment["concurrency_limit"] == {"limit": 1, "collision_strategy": "ENQUEUE"}
    return deployments


def test_shipped_prefect_yaml_matches_the_flows() -> None:
    deployments = check_prefect_yaml(EXAMPLE.read_text(encoding="utf-8"))
    assert {d["name"] for d in deployments} == {
        "server-local@{{ $PATCHFLOW_INSTANCE }}", "policy-workstations@{{ $PATCHFLOW_INSTANCE }}",
        "reports@{{ $PATCHFLOW_INSTANCE }}", "feeds@{{ $PATCHFLOW_INSTANCE }}"}
    for deployment in deployments:
        assert "instance:{{ $PATCHFLOW_INSTANCE }}" in deployment["tags"]
    # No path of one machine: the worker's own environment says where the checkout is.
    assert yaml.safe_load(EXAMPLE.read_text())["pull"][0][
        "prefect.deployments.steps.set_working_directory"]["directory"] == \
        "{{ $PATCHFLOW_CHECKOUT }}"


def test_exported_prefect_yaml_matches_the_flows(cli: Any, sqlite_home: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHFLOW_INSTANCE", "hq")
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h").code == 0
    assert cli("server", "schedule", "local", "--frequency", "weekly", "--weekday", "monday",
               "--at", "01:00").code == 0
    assert cli("report", "schedule", "--weekday", "friday", "--at", "07:30").code == 0
    out = sqlite_home / "prefect.yaml"
    r = cli("deployments", "export", "--work-pool", "patchflow", "--out", str(out))
    assert r.code == 0, r.err
    deployments = check_prefect_yaml(out.read_text(encoding="utf-8"))
    assert [d["name"] for d in deployments] == ["feeds@hq", "reports@hq", "server-local@hq"]
    # Workers' deployments carry the instance but not the tag `serve` deletes by.
    assert deployments[2]["tags"] == ["patchflow", "sync", "instance:hq"]
    assert yaml.safe_load(out.read_text())["pull"][0][
        "prefect.deployments.steps.set_working_directory"]["directory"] == str(ROOT)


@pytest.mark.usefixtures("prefect")
def test_prefect_deploy_all_of_the_exported_file(cli: Any, sqlite_home: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`prefect deploy --all` accepts the exported file: readable names with the instance, the
    schedule and the concurrency limit (the shipped file runs on a worker end to end in
    tests/deployments/test_prefect_platform.py)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    monkeypatch.setenv("PATCHFLOW_INSTANCE", "hq")
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h").code == 0
    assert cli("server", "schedule", "local", "--frequency", "weekly", "--weekday", "monday",
               "--at", "01:00").code == 0
    pool = f"patchflow-{uuid.uuid4().hex[:8]}"
    exported = sqlite_home / "prefect.yaml"
    assert cli("deployments", "export", "--work-pool", pool, "--out", str(exported)).code == 0
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
           "PYTHONPATH": str(ROOT)}

    def run(*args: str, timeout: float = 120) -> str:
        done = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        return done.stdout

    run("work-pool", "create", pool, "--type", "process")
    run("--no-prompt", "deploy", "--all", "--prefect-file", str(exported))
    with get_client(sync_client=True) as client:
        sync = client.read_deployment_by_name("patchflow-sync/server-local@hq")
    assert sync.work_pool_name == pool and sync.parameters == {"server_name": "local"}
    assert set(sync.tags) == {"patchflow", "sync", "instance:hq"}
    assert "BYDAY=MO;BYHOUR=1;BYMINUTE=0" in sync.schedules[0].schedule.rrule
    assert sync.global_concurrency_limit.limit == 1


# --- state hooks ----------------------------------------------------------------------------


def test_state_hooks_mark_cancelled_and_crashed_runs(cli: Any, home: Path) -> None:
    """What the runner runs after killing a deployment run: the sync and the scan say
    Stopped (or Failed after a crash) instead of Running forever, and the endpoints of the
    batch that was in flight get their previous state back."""
    from types import SimpleNamespace

    from sqlalchemy import select

    from deployments import hooks
    from models import Endpoint, PatchServer, Policy, Scan
    from models.db import session_scope
    from patchflow import fleet
    from patchflow.fleet.inventory import validate_documents
    from patchflow.scanning.service import create_scan
    from tests.e2e.test_serve import _inventory

    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h").code == 0
    assert cli("groups", "add", "lab").code == 0
    assert cli("policies", "add", "weekly", "--patch-server", "local", "--groups", "lab",
               "--scan-weekday", "monday", "--scan-at", "03:00").code == 0
    sync_run, scan_run = str(uuid.uuid4()), str(uuid.uuid4())
    with session_scope() as session:
        # Stored directly: the CLI's import would also queue a background rescan.
        fleet.import_inventories(session, validate_documents(
            [_inventory("WS-01"), _inventory("WS-02")]), "lab")
        server = session.scalar(select(PatchServer))
        server.sync_status, server.sync_flow_run_id = "Running", sync_run
        server.sync_stop_requested = True
        create_scan(session, "scheduled", "policy weekly", 2, scan_run)
        for endpoint in session.scalars(select(Endpoint)):
            endpoint.scan_state = "Scanning"
    other = SimpleNamespace(id=uuid.uuid4(), parameters={})
    hooks.sync_cancelled(None, other, None)  # another run: nothing changes
    hooks.sync_cancelled(None, SimpleNamespace(id=sync_run), None)
    hooks.scan_cancelled(None, SimpleNamespace(id=scan_run), None)
    hooks.scan_cancelled(None, SimpleNamespace(id=scan_run), None)  # idempotent
    with session_scope() as session:
        server = session.scalar(select(PatchServer))
        assert (server.sync_status, server.sync_stop_requested) == ("Stopped", False)
        assert "stopped by request" in server.sync_message and server.sync_finished_at
        scan = session.scalar(select(Scan).where(Scan.flow_run_id == scan_run))
        assert scan.status == "stopped" and scan.finished_at is not None
        assert {e.scan_state for e in session.scalars(select(Endpoint))} == {"Not Scanned"}
        server.sync_status = "Running"
    hooks.sync_crashed(None, SimpleNamespace(id=sync_run),
                       SimpleNamespace(message="process exited with code -9"))
    with session_scope() as session:
        server = session.scalar(select(PatchServer))
        assert server.sync_status == "Failed" and "code -9" in server.sync_message

    due = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
    manual = SimpleNamespace(id=uuid.uuid4(), expected_start_time=due,
                             parameters={"selection": {"policy": "weekly"}, "trigger": "manual"})
    hooks.scheduled_scan_running(None, manual, None)
    with session_scope() as session:
        assert session.scalar(select(Policy.last_scheduled_scan_at)) is None
    scheduled = SimpleNamespace(id=uuid.uuid4(), expected_start_time=due, parameters={
        "selection": {"policy": "weekly"}, "trigger": "scheduled"})
    hooks.scheduled_scan_running(None, scheduled, None)
    with session_scope() as session:
        assert session.scalar(select(Policy.last_scheduled_scan_at)) == due
