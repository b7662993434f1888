"""`patchflow demo`: the whole workflow on the embedded default, on a bundled slice of real data
(two MSRC months of late 2024 and real winget manifests: patchflow/sample_catalog/README.md).

The demo uses its own home (`.patchflow-demo` in the current folder unless PATCHFLOW_DEMO_HOME
says otherwise) and starts from scratch every run, so it is safe to run twice and never touches
a real installation's data. It runs the real parts: the HTTPS server on loopback, 25 simulated
agents enrolled with the pinned certificate, and the Prefect sync, scan, install and report
flows on an embedded Prefect server. Being an entry point that drives the agent, the server
and the flows together, it lives with the CLI; the simulated fleet it enrolls is data, in
patchflow/fleet/demo_fleet.py.

Everything heavy is imported inside the functions: Prefect reads PREFECT_HOME once, at import,
and the demo sets it first (and every other command loads this module at start-up).
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

import typer

from cli.common import console, print_table
from patchflow.errors import UserError

DEFAULT_DEMO_HOME = "./.patchflow-demo"
# The vulnerability feeds' offline forms bundled beside the catalog (sample_catalog/README.md).
DEMO_FEEDS = {"kev": "kev.json.gz", "mozilla": "mozilla-advisories.tar.gz", "nvd": "nvd"}
# What the demo installs: December 2024's cumulative updates for the three client releases,
# 7-Zip 23.01 and Java 8 Update 401 (whose licence the demo accepts).
DEMO_PATCHES = ("KB5048685", "KB5048667", "KB5048652", "7zip.7zip@23.01",
                "Oracle.JavaRuntimeEnvironment@8.0.4010.10")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo_home() -> Path:
    return Path(os.environ.get("PATCHFLOW_DEMO_HOME", DEFAULT_DEMO_HOME)).expanduser().resolve()


def prepare_home() -> Path:
    """Wipe and point this process at the demo home, on SQLite."""
    home = demo_home()
    if home.exists():
        if not (home / "patchflow.db").exists() and any(home.iterdir()):
            raise UserError(f"{home} exists and is not a patchflow demo home: not wiping it")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    os.environ["PATCHFLOW_HOME"] = str(home)
    os.environ.pop("PATCHFLOW_DATABASE_URL", None)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    (home / "prefect").mkdir()
    from patchflow.ops import prefect_env

    prefect_env.use_own_temporary_server()
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
    from patchflow.catalog.content import ContentStore
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
    # Before anything imports Prefect: it reads PREFECT_HOME once, at import (it
    # warned about ./.patchflow/prefect on a fresh clone when the flows came first).
    result = DemoResult(prepare_home())
    from sqlalchemy import func, select

    from flows.feeds import feeds_sync
    from flows.install import install as install_flow
    from flows.report import report_flow
    from flows.scan import scan as scan_flow
    from flows.sync import sync as sync_flow
    from models import Endpoint
    from models.db import dispose_all, session_scope
    from models.migrate import upgrade
    from patchflow import config, crypto, fleet
    from patchflow.catalog import servers, vulnfeeds
    from patchflow.fleet.demo_fleet import demo_fleet
    from patchflow.install.eula import accept_eula
    from patchflow.install.jobs import start_from_selection
    from patchflow.install.selection import select_pairs
    from patchflow.ops import setup, tls
    from patchflow.reporting.report_data import load_dashboard
    from patchflow.sample_catalog import DEMO_MSRC_DIR, DEMO_VULN_DIR, DEMO_WINGET_DIR, PACKAGES
    from patchflow.scanning.service import RESCANS
    from server.app import create_app
    from server.run import BackgroundServer

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
            host="localhost", msrc_source=str(DEMO_MSRC_DIR),
            winget_source=str(DEMO_WINGET_DIR),
            winget_packages=list(PACKAGES)))
    synced = sync_flow("local")
    result.steps.append(("sync", f"{synced['status']}: {synced['message']}"))
    say(f"sync: {synced['status']}: {synced['message']}")
    say(f"content store: {fill_content_store()} sample installers verified by SHA-256")
    with session_scope() as session:
        for name, source in DEMO_FEEDS.items():
            vulnfeeds.set_source(session, name, str(DEMO_VULN_DIR / source))
    feeds = feeds_sync()
    result.steps.append(("feeds", "; ".join(f"{f['name']} {f['status']}" for f in feeds)))
    for feed in feeds:
        say(f"vulnerability feed {feed['name']}: {feed['status']}: {feed['message']}")

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
            # Java's licence is proprietary: the demo accepts it as an administrator would.
            accept_eula(session, "Oracle.JavaRuntimeEnvironment@8.0.4010.10", "demo")
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
        with session_scope() as session:  # what `patchflow dashboard --json` prints
            result.dashboard = load_dashboard(session)
        dashboard_file = result.home / "reports" / "dashboard.json"
        dashboard_file.write_text(json.dumps(result.dashboard, indent=2))
        result.ok = (synced["status"] == "Successful" and summary["status"] != "failed"
                     and all(f["status"] == "Successful" for f in feeds))
    finally:
        if agents is not None:
            agents.stop()
        server.stop()
        RESCANS.wait_idle(30)
    return result


# --- `patchflow demo --serve`: the demo's data in the console and the Prefect UI ------------

DEMO_ADMIN = "admin"


@dataclass
class DemoService:
    console_url: str
    prefect_url: str
    username: str
    password: str
    fingerprint: str
    log: Path


def create_demo_admin() -> tuple[str, str]:
    """A console administrator with a generated password, returned once and stored only as a
    hash (the demo home is wiped at every run, so a fixed password would buy nothing)."""
    import secrets

    from models.db import session_scope
    from patchflow.ops import accounts

    password = secrets.token_urlsafe(12)
    with session_scope() as session:
        accounts.add_admin(session, DEMO_ADMIN, password)
    return DEMO_ADMIN, password


def _answers(url: str, cafile: Path | None) -> bool:
    import ssl
    import urllib.request

    # Loopback never goes through a proxy a user's environment names.
    handlers: list[Any] = [urllib.request.ProxyHandler({})]
    if cafile is not None:
        handlers.append(urllib.request.HTTPSHandler(
            context=ssl.create_default_context(cafile=str(cafile))))
    try:
        with urllib.request.build_opener(*handlers).open(url, timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def start_service(port: int, prefect_port: int) -> tuple[Any, DemoService]:
    """`patchflow serve` on the demo home, on loopback only, in a child process: the flows of
    the demo already imported Prefect in this process with its temporary server, and Prefect
    reads its API URL once, at import. The child starts its own session (so a terminal's
    Ctrl+C reaches it once, through `stop_service`) and dies with this process."""
    import subprocess
    import sys

    from patchflow import config
    from patchflow.ops import childproc, tls

    username, password = create_demo_admin()
    home = config.home()
    log = home / "logs" / "demo-serve.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    command = [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--prefect-port", str(prefect_port)]
    with log.open("ab") as out:
        proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=childproc.die_with_parent())
    cert, _key = tls.cert_paths()
    service = DemoService(f"https://localhost:{port}/console",
                          f"http://127.0.0.1:{prefect_port}", username, password,
                          tls.fingerprint(cert), log)
    ready = _wait(lambda: proc.poll() is not None or (
        _answers(f"https://localhost:{port}/api/v1/health", cert)
        and _answers(f"{service.prefect_url}/api/health", None)), 240)
    if proc.poll() is not None or not ready:
        stop_service(proc)
        tail = "; ".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-3:])
        raise UserError(f"the demo server did not start (see {log}): {tail}")
    return proc, service


def stop_service(proc: Any, timeout: float = 60.0) -> int:
    """Ctrl+C for the child (it stops uvicorn, the runner, then Prefect), then wait."""
    import signal
    import subprocess

    from patchflow.ops import childproc

    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            childproc.kill_group(proc.pid)
    return int(proc.wait())


# --- the command ----------------------------------------------------------------------------


def demo(
    serve: bool = typer.Option(False, "--serve", help="Then keep the console and the Prefect UI "
                               "running on the demo's data until Ctrl+C (loopback only)"),
    port: int = typer.Option(6201, "--port", min=1, max=65535,
                             help="With --serve: the console's HTTPS port"),
    prefect_port: int = typer.Option(4200, "--prefect-port", min=1, max=65535,
                                     help="With --serve: the Prefect UI's port"),
) -> None:
    """Run the whole workflow on a fresh demo home: sync, enrol, scan, install, rescan, report.
    With --serve, then look at it in the web console and the Prefect UI."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    if serve:  # before the demo's half minute, not after
        from deployments.prefect_server import port_is_free

        for name, number in (("--port", port), ("--prefect-port", prefect_port)):
            if not port_is_free("127.0.0.1", number):
                raise UserError(f"port {number} is in use on 127.0.0.1: choose another with "
                                f"{name}")
    from patchflow.install.outcome import plural

    started = time.monotonic()
    console.rule("patchflow demo")
    try:
        result = run_demo(lambda line: console.print(f"• {line}", highlight=False))
    except (KeyboardInterrupt, UserError):
        raise
    except Exception as exc:  # the demo's promise is one line, never a traceback
        import traceback

        log = demo_home() / "demo-error.log"
        log.write_text(traceback.format_exc(), encoding="utf-8")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"demo failed: {first} (details in {log})") from None
    print_table("Demo summary", ["Step", "Outcome"], result.steps)
    sev = result.dashboard.get("missing_by_severity", {})
    print_table("Missing patches by severity (after the install)",
                ["Severity", "Patches", "Endpoint pairs"],
                [[name, v["patches"], v["pairs"]] for name, v in sev.items()])
    overview = result.dashboard.get("scan_overview", {})
    console.print("scan overview: " + ", ".join(f"{k} {v}" for k, v in overview.items()))
    exploited = result.dashboard.get("exploited", {})
    console.print(f"exploited in the wild (CISA KEV, MSRC, Mozilla): "
                  f"{plural(exploited.get('patches', 0), 'patch', 'patches')} missing on "
                  f"{plural(exploited.get('pairs', 0), 'endpoint pair')}, "
                  f"{plural(result.dashboard.get('overdue_kev', 0), 'pair')} past their KEV "
                  "due date")
    console.print("HTML reports:")
    for path in result.reports:
        console.print(f"  {path}", highlight=False)
    console.print(f"demo home: {result.home}  ({time.monotonic() - started:.0f} s)")
    if not result.ok:
        raise typer.Exit(1)
    if serve:
        _serve_demo(port, prefect_port)
    else:
        print("To look at it in the web console and the Prefect UI:\n"
              "  make demo-serve    (or: patchflow demo --serve)", flush=True)


def _serve_demo(port: int, prefect_port: int) -> None:
    console.print("starting the console and the Prefect UI on the demo home…", highlight=False)
    proc, service = start_service(port, prefect_port)
    try:
        # Plain lines, never wrapped: the password and the URLs must survive a copy.
        print(f"Console:    {service.console_url}\n"
              f"            user {service.username}, password {service.password} (shown once; "
              "the next demo run wipes it)\n"
              f"            self-signed certificate, SHA-256 {service.fingerprint}\n"
              f"Prefect UI: {service.prefect_url}\n"
              f"server log: {service.log}\n"
              "Press Ctrl+C to stop.", flush=True)
        code = proc.wait()
    except KeyboardInterrupt:
        code = stop_service(proc)
        console.print("stopped", highlight=False)
        if code not in (0, -2, 130):
            raise typer.Exit(1) from None
        return
    finally:
        stop_service(proc)
    if code != 0:
        raise UserError(f"the demo server stopped by itself (exit {code}; see {service.log})")
