"""`patchflow demo`: the whole workflow on the embedded default, from the bundled sample catalog.

The demo uses its own home (`.patchflow-demo` in the current folder unless PATCHFLOW_DEMO_HOME
says otherwise) and starts from scratch every run, so it is safe to run twice and never touches
a real installation's data. It runs the real parts: the HTTPS server on loopback, 25 simulated
agents enrolled with the pinned certificate, and the Prefect sync, scan, install and report
flows on an embedded Prefect server.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DEMO_HOME = "./.patchflow-demo"
# What the demo installs: October's cumulative updates, 7-Zip and Java (which needs its EULA).
DEMO_PATCHES = ("KB5900110", "KB5900120", "KB5900130", "7zip.7zip@25.01",
                "Oracle.JavaRuntimeEnvironment@8.0.4510.9")


def demo_home() -> Path:
    return Path(os.environ.get("PATCHFLOW_DEMO_HOME", DEFAULT_DEMO_HOME)).expanduser().resolve()


def prepare_home() -> Path:
    """Wipe and point this process at the demo home, on SQLite."""
    home = demo_home()
    if home.exists():
        if not (home / "patchflow.db").exists() and any(home.iterdir()):
            from patchflow.errors import UserError

            raise UserError(f"{home} exists and is not a patchflow demo home: not wiping it")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    # Prefect may have read its home at import, before this process moved to the demo home:
    # make sure that folder exists too, or its temporary server cannot create its database.
    if os.environ.get("PREFECT_HOME"):
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ["PATCHFLOW_HOME"] = str(home)
    os.environ.pop("PATCHFLOW_DATABASE_URL", None)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    (home / "prefect").mkdir()
    return home


@dataclass
class DemoResult:
    home: Path
    steps: list[tuple[str, str]] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    dashboard: dict[str, Any] = field(default_factory=dict)
    job: dict[str, Any] = field(default_factory=dict)
    ok: bool = True


def fill_content_store() -> int:
    """The sample installers live under a `.invalid` domain: put their bytes in the store, as
    a previous download would have, so the install flow finds them verified and present."""
    from urllib.parse import unquote, urlsplit

    from sqlalchemy import select

    from models import PatchInstaller
    from models.db import session_scope
    from patchflow.content import ContentStore
    from patchflow.sample_catalog import payload

    store = ContentStore()
    with session_scope() as session:
        rows = session.execute(select(PatchInstaller.url, PatchInstaller.sha256)).all()
    for url, sha in rows:
        store.put_bytes(payload(unquote(urlsplit(url).path.rsplit("/", 1)[1])), sha)
    return len(rows)


class _Agents:
    """The simulated endpoints: each enrolled through the agent CLI, then run in a thread."""

    def __init__(self, url: str, fingerprint: str, token: str, folder: Path) -> None:
        self.url, self.fingerprint, self.token, self.folder = url, fingerprint, token, folder
        self.threads: list[Any] = []
        self.stops: list[Any] = []

    def start(self, docs: list[dict[str, Any]]) -> None:
        import threading

        from agent.cli import main as agent_main
        from agent.platforms.simulated import SimulatedPlatform
        from agent.runner import AgentRunner, Schedule
        from agent.state import StateDir
        from agent.transport import ServerClient

        for doc in docs:
            folder = self.folder / doc["hostname"]
            folder.mkdir(parents=True)
            inventory = folder / "inventory.json"
            inventory.write_text(json.dumps(doc), encoding="utf-8")
            state_dir = folder / "state"
            with contextlib.redirect_stdout(io.StringIO()):  # one summary line, not 25
                code = agent_main(["--state-dir", str(state_dir), "enroll", "--server",
                                   self.url, "--token", self.token, "--fingerprint",
                                   self.fingerprint, "--inventory", str(inventory)])
            if code != 0:
                raise RuntimeError(f"agent enrolment of {doc['hostname']} failed ({code})")
            state = StateDir(state_dir)
            identity = state.load_identity()
            client = ServerClient(identity.server, fingerprint=identity.fingerprint,
                                  agent_id=identity.agent_id, secret=identity.secret)
            runner = AgentRunner(client, state, SimulatedPlatform(inventory),
                                 Schedule(inventory_every=3600, poll_every=0.5, jitter=0.1,
                                          backoff_start=0.5, backoff_max=2.0))
            stop = threading.Event()
            thread = threading.Thread(target=runner.run_forever, kwargs={"stop": stop.is_set},
                                      daemon=True)
            thread.start()
            self.threads.append((thread, client))
            self.stops.append(stop)

    def stop(self) -> None:
        for stop in self.stops:
            stop.set()
        for thread, client in self.threads:
            thread.join(timeout=10)
            client.close()


def _wait(check: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.3)
    return False


def run_demo(say: Callable[[str], None]) -> DemoResult:
    from sqlalchemy import func, select

    from flows.install import install as install_flow
    from flows.report import report_flow
    from flows.scan import scan as scan_flow
    from flows.sync import sync as sync_flow
    from models import Endpoint
    from models.db import dispose_all, session_scope
    from models.migrate import upgrade
    from patchflow import config, crypto, fleet, servers, setup, tls
    from patchflow.demo_fleet import demo_fleet
    from patchflow.install.eula import accept_eula
    from patchflow.install.jobs import start_from_selection
    from patchflow.install.selection import select_pairs
    from patchflow.report_data import load_dashboard
    from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
    from patchflow.scanning import RESCANS
    from server.app import create_app
    from server.run import BackgroundServer

    result = DemoResult(prepare_home())
    dispose_all()
    config.write_config({"server": {"host": "localhost"},
                         "install": {"poll_seconds": 0.2, "retry_delay_s": 0,
                                     "item_timeout_s": 60}})
    crypto.encrypt("")
    upgrade()
    setup.ensure_home_layout()
    say("initialised the demo home (SQLite, TLS certificate for localhost)")

    with session_scope() as session:
        servers.add_server(session, "local", servers.ServerOptions(
            host="localhost", msrc_source=str(MSRC_DIR), winget_source=str(WINGET_DIR),
            winget_packages=list(PACKAGES)))
    synced = sync_flow("local")
    result.steps.append(("sync", f"{synced['status']}: {synced['message']}"))
    say(f"sync: {synced['status']}: {synced['message']}")
    say(f"content store: {fill_content_store()} sample installers verified by SHA-256")

    cert, key = tls.cert_paths()
    server = BackgroundServer(create_app(), cert, key).start()
    agents = None
    try:
        say(f"HTTPS server on {server.url}")
        with session_scope() as session:
            token, _ = fleet.create_enrollment_token(session, None, "1d", None)
        agents = _Agents(server.url, tls.fingerprint(cert), token, result.home / "agents")
        docs = demo_fleet(25)
        agents.start(docs)

        def enrolled() -> bool:
            with session_scope() as session:
                return (session.scalar(select(func.count()).select_from(Endpoint)
                                       .where(Endpoint.inventory_at.is_not(None))) or 0) >= 25

        _wait(enrolled, 60)
        time.sleep(RESCANS.delay + 0.3)
        RESCANS.wait_idle(60)
        result.steps.append(("enrol", f"{len(docs)} simulated endpoints enrolled"))
        say(f"enrolled {len(docs)} simulated endpoints; inventories uploaded")

        scanned = scan_flow({"all": True})
        result.steps.append(("scan", f"{scanned['scanned']} endpoints, {scanned['pairs']} "
                                     f"missing (endpoint, patch) pairs"))
        say(f"scan: {scanned['missing_endpoints']} endpoints with missing patches, "
            f"{scanned['up_to_date']} up to date, {scanned['pairs']} missing pairs")

        with session_scope() as session:
            accept_eula(session, "Oracle.JavaRuntimeEnvironment@8.0.4510.9", "demo")
            picked = [select_pairs(session, ref, all_affected=True, who="demo")
                      for ref in DEMO_PATCHES]
            job = start_from_selection(session, "demo", allow_restart=False)
            job_id = job.id
        say("selected " + ", ".join(f"{p['patch']} ×{p['selected']}" for p in picked))
        summary = install_flow(job_id)
        result.job = summary
        result.steps.append(("install", summary["summary"]))
        say(f"install job {job_id}: {summary['summary']}")

        # Agents send a fresh inventory after installing; the server rescans them.
        time.sleep(2.0)
        RESCANS.wait_idle(60)
        rescanned = scan_flow({"all": True})
        result.steps.append(("rescan", f"{rescanned['pairs']} missing pairs left"))
        say(f"rescan: {rescanned['pairs']} missing pairs left "
            f"(was {scanned['pairs']})")

        report = report_flow(created_by="demo")
        result.reports = sorted(str(Path(report["path"]) / f["name"]) for f in report["files"]
                                if f["name"].endswith(".html"))
        result.steps.append(("report", report["path"]))
        with session_scope() as session:
            result.dashboard = load_dashboard(session)
        dashboard_file = result.home / "reports" / "dashboard.json"
        dashboard_file.write_text(json.dumps(result.dashboard, indent=2))
        result.ok = synced["status"] == "Successful" and summary["status"] != "failed"
    finally:
        if agents is not None:
            agents.stop()
        server.stop()
        RESCANS.wait_idle(30)
    return result
