"""Topology 3 of docs/operations.md on one machine, as real processes on loopback:

    Prefect server (`prefect server start`, its database on PostgreSQL)
    node 1: `patchflow serve --no-scheduler` (HTTPS API for the agents, console), own home
    node 2, node 3: a `prefect worker start` process worker and a `dask worker` each, own home
            (empty but for a patchflow.toml of install timings), the key as
            PATCHFLOW_SECRET_KEY instead of a copied secret.key
    MariaDB for patchflow's data; an OpenSSH SFTP server as the storage ([storage] url)

The shipped deployments/prefect.yaml is deployed with `prefect deploy --all` as an administrator
would; runs are pinned to a node through one work queue per worker. Through those deployments:
a sync (node 2), a scan whose batches a Dask scheduler spreads over both nodes' Dask workers
(flow on node 3), the scheduled policy scan whose auto-install (node 2) fetches the installers
onto the storage while simulated agents, enrolled against node 1, get them from node 1, and
the reports (node 3) e-mailed with the SMTP password the worker decrypts with the key from its
environment, then opened through node 1's console from the storage. The scan's missing pairs
must equal a single-node run of the same inventories (the CLI on SQLite).

No folder is shared between the nodes except what the storage URL names; the machine's
loopback is (network namespaces would show more, and are not used here).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import tomli_w

from patchflow.reporting.service import report_key
from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
from tests.conftest import _prepare
from tests.fixtures.agent.harness import database_url
from tests.fixtures.console import PASSWORD as ADMIN_PASSWORD
from tests.fixtures.console import log_in
from tests.fixtures.install.agents import SimAgent, inventory, program, serve_sample_installers
from tests.support.httpserver import serve_files
from tests.support.paths import REPO
from tests.support.polling import free_port, wait_for
from tests.support.smtp_server import PASSWORD as SMTP_PASSWORD
from tests.support.smtp_server import smtp_server
from tests.support.sshd_server import sshd, unavailable

pytest.importorskip("prefect_dask")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")]

POSTGRES = os.environ.get("PATCHFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
INSTANCE = "lab"
# Six endpoints in batches of one: six scan-batch tasks for the Dask scheduler to spread.
FLEET = [
    inventory("WS-01", 5800, ["KB5890010"], [program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov")]),
    inventory("WS-02", 6000, ["KB5900110", "KB5900150"],
              [program("VLC media player", "3.0.20", "VideoLAN")]),
    inventory("WS-03", 5900, ["KB5900010", "KB5900150"], []),
    inventory("WS-04", 6000, ["KB5900110", "KB5900150"],
              [program("Notepad++ (64-bit x64)", "8.6.9", "Notepad++ Team")]),
    inventory("WS-05", 5800, [], [program("7-Zip 24.08", "24.08", "Igor Pavlov", "x86")]),
    inventory("WS-06", 6000, ["KB5900110", "KB5900150"], []),
]
AUTO = ("WS-01", "WS-03")  # the group of the auto-install policy `workstations`


# --- PostgreSQL for the Prefect server ---------------------------------------------------------


def _pg(sql: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(f"{POSTGRES}/postgres", timeout=5)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh database for the Prefect server, unique per xdist worker and run, dropped at the
    end; the test skips (with the reason) only when PostgreSQL does not answer."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"prefect_topology_{worker}_{uuid.uuid4().hex[:8]}"
    try:
        _pg(f'CREATE DATABASE "{name}"')
    except (OSError, TimeoutError) as exc:
        pytest.skip(f"PostgreSQL not reachable at {POSTGRES}: {exc}")
    try:
        yield f"{POSTGRES.replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
    finally:
        _pg(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Processes:
    """Every long-running process of the topology, each in its own process group (a process
    worker's flow runs and a Dask worker's children go with it), its output in a log file."""

    folder: Path
    running: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def start(self, label: str, args: list[str], env: dict[str, str],
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log = self.folder / f"{label}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(args, cwd=cwd or self.folder, env=env, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append((label, proc, log))
        return proc

    def check_alive(self) -> None:
        for label, proc, _log in self.running:
            assert proc.poll() is None, f"{label} exited with {proc.returncode}"

    def stop_all(self) -> None:
        """Ctrl+C to every group, then SIGTERM to what still runs (a Dask worker whose Prefect
        threads outlive the interrupt), then SIGKILL: everything they started goes too."""
        for sig, grace in ((signal.SIGINT, 8.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 10.0)):
            alive = [proc for _label, proc, _log in reversed(self.running) if proc.poll() is None]
            for proc in alive:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)
            deadline = time.monotonic() + grace
            for proc in alive:
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(max(0.1, deadline - time.monotonic()))
        for _label, proc, _log in self.running:  # children left in a group whose leader ended
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    def dump(self) -> None:
        for label, _proc, log in self.running:
            text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
            print(f"\n===== {label} ({log}) =====\n{text[-6000:]}")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "PATCHFLOW_", "DASK_")) and k != "PYTHONPATH"}
    env.update({"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                "PREFECT_LOGGING_LEVEL": "INFO", **extra})
    return env


def _run(env: dict[str, str], *args: str, input: str | None = None,
         timeout: float = 180) -> str:
    done = subprocess.run(list(args), cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, input=input)
    assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
    return done.stdout


def _patchflow(env: dict[str, str], *args: str, input: str | None = None) -> str:
    return _run(env, sys.executable, "-m", "cli.main", *args, input=input)


def _prefect(env: dict[str, str], *args: str) -> str:
    return _run(env, sys.executable, "-m", "prefect", *args)


# --- the test ------------------------------------------------------------------------------------


@dataclass
class Node1:
    """What SimAgent needs of the server it enrolls with."""

    url: str
    fingerprint: str
    db_url: str

    def token(self, group: str | None = None) -> str:
        from models.db import session_scope
        from patchflow import fleet

        with session_scope(self.db_url) as session:
            token, _row = fleet.create_enrollment_token(session, group, "1d", None)
        return token


def _missing_by_endpoint(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["endpoint"], set()).add(row["kb"] or row["package_id"])
    return found


def _scalar(engine: sa.Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def _rows(engine: sa.Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql), params).all())


def test_three_nodes_share_only_the_database_the_storage_and_the_key(tmp_path: Path) -> None:
    started = time.monotonic()
    maria = database_url("mariadb", tmp_path)
    _prepare(maria)  # schema at head, every table empty
    engine = sa.create_engine(maria)
    procs = Processes(tmp_path)
    with ExitStack() as stack:
        pg_url = stack.enter_context(postgres_database())
        ssh = stack.enter_context(sshd(tmp_path / "sshd"))
        smtp = stack.enter_context(contextmanager(smtp_server)())
        vendor = stack.enter_context(serve_files())
        stack.callback(engine.dispose)
        stack.callback(procs.stop_all)
        try:
            _topology(tmp_path, maria, engine, pg_url, ssh, smtp, vendor, procs, started)
        except BaseException:
            procs.dump()
            raise


def _topology(tmp_path: Path, maria: str, engine: sa.Engine, pg_url: str, ssh: Any, smtp: Any,
              vendor: Any, procs: Processes, started: float) -> None:
    # The Prefect server, on PostgreSQL.
    prefect_port = free_port()
    api = f"http://127.0.0.1:{prefect_port}/api"
    procs.start("prefect-server", [sys.executable, "-m", "prefect", "server", "start",
                                   "--host", "127.0.0.1", "--port", str(prefect_port)],
                _clean_env(PREFECT_HOME=str(tmp_path / "prefect-server-home"),
                           PREFECT_API_DATABASE_CONNECTION_URL=pg_url,
                           PREFECT_UI_ENABLED="false"))

    shared = {"PREFECT_API_URL": api, "PATCHFLOW_DATABASE_URL": maria,
              "PATCHFLOW_INSTANCE": INSTANCE, "PATCHFLOW_STORAGE_URL": ssh.url(),
              "PATCHFLOW_STORAGE_KEY_FILE": str(ssh.key_file)}

    def node_env(name: str, **extra: str) -> dict[str, str]:
        home = tmp_path / name / "home"
        home.mkdir(parents=True, exist_ok=True)
        return _clean_env(**shared, PATCHFLOW_HOME=str(home),
                          PREFECT_HOME=str(home / "prefect"), **extra)

    # Node 1: init (secret.key and the TLS certificate live only here), the patch server, SMTP
    # with its password encrypted into the database, the auto-install policy, a console admin.
    env1 = node_env("node1")
    home1 = Path(env1["PATCHFLOW_HOME"])
    _patchflow(env1, "init", "--host", "localhost")
    _patchflow(env1, "server", "add", "local", "--host", "localhost", "--msrc-source",
               str(MSRC_DIR), "--winget-source", str(WINGET_DIR), "--winget-packages",
               ",".join(PACKAGES))
    _patchflow({**env1, "PATCHFLOW_SMTP_PASSWORD": SMTP_PASSWORD}, "mail", "set", "--host",
               "127.0.0.1", "--port", str(smtp.port), "--security", "none", "--user",
               "svc-reports", "--sender", "reports@corp.example")
    _patchflow(env1, "groups", "add", "ws")
    _patchflow(env1, "policies", "add", "workstations", "--patch-server", "local", "--groups",
               "ws", "--auto-install")
    _patchflow(env1, "admin", "add", "alice", "--password-stdin", input=ADMIN_PASSWORD + "\n")
    key_text = (home1 / "secret.key").read_text()
    https_port = free_port()
    procs.start("node1-serve", [sys.executable, "-m", "cli.main", "serve", "--no-scheduler",
                                "--host", "127.0.0.1", "--port", str(https_port)], env1)

    # Nodes 2 and 3: nothing copied from node 1; the key comes from the environment.
    env2, env3 = (node_env(name, PATCHFLOW_SECRET_KEY=key_text,
                           PATCHFLOW_CHECKOUT=str(REPO), PREFECT_WORKER_QUERY_SECONDS="1")
                  for name in ("node2", "node3"))
    for env in (env2, env3):
        (Path(env["PATCHFLOW_HOME"]) / "patchflow.toml").write_text(tomli_w.dumps(
            {"install": {"poll_seconds": 0.5, "retry_delay_s": 0, "item_timeout_s": 90}}))

    dask_port = free_port()
    dask_address = f"tcp://127.0.0.1:{dask_port}"
    procs.start("dask-scheduler", [sys.executable, "-m", "distributed.cli.dask_scheduler",
                                   "--host", "127.0.0.1", "--port", str(dask_port),
                                   "--no-dashboard"],
                # One task per worker thread at a time: the batches go to both workers.
                _clean_env(DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION="1.0"))

    wait_for("the Prefect server on PostgreSQL", lambda: _healthy(api, procs), timeout=120)
    print(f"Prefect server up after {time.monotonic() - started:.0f} s")
    _prefect(env2, "work-pool", "create", "patchflow", "--type", "process")
    for queue in ("node2", "node3"):
        _prefect(env2, "work-queue", "create", queue, "--pool", "patchflow")
    _prefect(env2, "--no-prompt", "deploy", "--all", "--prefect-file",
             "deployments/prefect.yaml")
    for name, env in (("node2", env2), ("node3", env3)):
        procs.start(f"{name}-prefect-worker",
                    [sys.executable, "-m", "prefect", "worker", "start", "--pool", "patchflow",
                     "--work-queue", name, "--name", name], env, cwd=Path(env["PATCHFLOW_HOME"]))
        procs.start(f"{name}-dask-worker",
                    [sys.executable, "-m", "distributed.cli.dask_worker", dask_address,
                     "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                     "--local-directory", str(Path(env["PATCHFLOW_HOME"]) / "dask")],
                    env, cwd=Path(env["PATCHFLOW_HOME"]))
    deployments = {d["name"]: d for d in httpx.post(f"{api}/deployments/filter", json={},
                                                    timeout=10).json()}

    def run(deployment: str, queue: str, parameters: dict[str, Any] | None = None,
            timeout: float = 180) -> dict[str, Any]:
        flow_run = httpx.post(
            f"{api}/deployments/{deployments[deployment]['id']}/create_flow_run",
            json={"work_queue_name": queue, "parameters": parameters or {}}, timeout=10).json()

        def final() -> dict[str, Any] | None:
            procs.check_alive()
            found = httpx.get(f"{api}/flow_runs/{flow_run['id']}", timeout=10).json()
            return found if found["state"]["type"] in (
                "COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        began = time.monotonic()
        done = wait_for(f"flow run of {deployment} on {queue}", final, timeout=timeout)
        print(f"{deployment} on {queue}: {time.monotonic() - began:.0f} s")
        assert done["state"]["type"] == "COMPLETED", done["state"]
        return done

    ran_on: dict[str, set[str]] = {}

    def worker_of(flow_run: dict[str, Any]) -> str:
        name = str(flow_run["work_queue_name"])
        ran_on.setdefault(name, set()).add(flow_run["id"])
        return name

    # 1. The sync, on node 2: the catalog into MariaDB; the installers then on a loopback
    # vendor that only the workers download from.
    synced = run(f"server-local@{INSTANCE}", "node2")
    assert worker_of(synced) == "node2"
    assert _scalar(engine, "SELECT sync_status FROM patch_servers") == "Successful"
    assert _scalar(engine, "SELECT COUNT(*) FROM patches") > 0
    serve_sample_installers(vendor, maria, set())

    # Agents enroll with node 1 (pinned certificate) and send their inventories.
    wait_for("node 1's HTTPS API", lambda: _healthy(f"https://127.0.0.1:{https_port}/api/v1",
                                                   procs), timeout=60)
    from patchflow.ops import tls

    node1 = Node1(f"https://127.0.0.1:{https_port}", tls.fingerprint(home1 / "tls" / "server.crt"),
                  maria)
    agents: list[SimAgent] = []
    try:
        for doc in FLEET:
            agent = SimAgent(node1, tmp_path / "agents" / doc["hostname"], doc,  # type: ignore[arg-type]
                             "ws" if doc["hostname"] in AUTO else None)
            agents.append(agent)
            agent.runner.upload_inventory()
        _scan_install_report(engine, deployments, procs, run, worker_of, agents, dask_address,
                             ssh, smtp, node1, tmp_path, api, home1, env2, env3)
    finally:
        for agent in agents:
            agent.stop()
    # Each worker node ran flow runs of its own, and both ran scan batches (checked above).
    assert set(ran_on) == {"node2", "node3"} and all(len(v) == 2 for v in ran_on.values())
    # Every run that started ended Completed: the four deployment runs, the install subflow,
    # the single-node reference's sync and scan (only the schedules' future runs wait).
    runs = httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}, timeout=10).json()
    states = [r["state"]["type"] for r in runs if r["state"]["type"] != "SCHEDULED"]
    assert len(states) >= 7 and set(states) == {"COMPLETED"}, states
    print(f"3-node topology: {time.monotonic() - started:.0f} s in all")


def _healthy(url: str, procs: Processes) -> bool:
    procs.check_alive()
    try:
        return httpx.get(f"{url}/health", timeout=2, verify=False).status_code == 200
    except httpx.HTTPError:
        return False


def _scan_install_report(engine: sa.Engine, deployments: dict[str, Any], procs: Processes,
                         run: Any, worker_of: Any, agents: list[SimAgent], dask_address: str,
                         ssh: Any, smtp: Any, node1: Node1, tmp_path: Path, api: str, home1: Path,
                         env2: dict[str, str], env3: dict[str, str]) -> None:
    from distributed import Client

    # Node 1 rescans each upload in the background: wait for those, so that every missing
    # pair found below carries the id of the Dask scan (a full one: an incremental scan would
    # keep the rescans' results and evaluate nothing).
    wait_for("node 1's rescans of the uploads", lambda: _scalar(
        engine, "SELECT COUNT(*) FROM endpoints WHERE last_scan_id IS NOT NULL") == len(FLEET),
        timeout=60)
    scan_deployment = deployments[f"policy-workstations@{INSTANCE}"]
    full = {"full": True} if "full" in \
        scan_deployment["parameter_openapi_schema"]["properties"] else {}

    # 2. The scan, flow on node 3, its six batches on the Dask workers of nodes 2 and 3.
    with Client(dask_address, timeout=60) as client:
        wait_for("both Dask workers", lambda: len(client.scheduler_info()["workers"]) == 2,
                 timeout=60)
        names = {address: info["name"]
                 for address, info in client.scheduler_info()["workers"].items()}
        since = time.time()
        client.get_task_stream(start=since)  # registers the scheduler's task stream plugin
        scanned = run(f"policy-workstations@{INSTANCE}", "node3",
                      {"selection": {"all": True}, "trigger": "manual", "batch_size": 1,
                       "task_runner": dask_address, **full})
        stream = client.get_task_stream(start=since)
    assert worker_of(scanned) == "node3"
    batches = [t for t in stream if re.match(r"scan[-_]batch", str(t["key"]))]
    assert len(batches) == len(FLEET), stream
    per_node = {names[t["worker"]]: 0 for t in batches}
    for task in batches:
        per_node[names[task["worker"]]] += 1
    assert set(per_node) == {"node2", "node3"}, per_node
    print(f"scan batches per Dask worker: {per_node}")
    ((scan_id, status, done),) = _rows(
        engine, "SELECT id, status, endpoints_done FROM scans WHERE flow_run_id = :r",
        r=scanned["id"])
    assert (status, done) == ("completed", len(FLEET))
    assert _scalar(engine, "SELECT COUNT(*) FROM missing_patches WHERE scan_id IS NULL "
                           "OR scan_id <> :s", s=scan_id) == 0
    distributed_missing = _missing_by_endpoint(json.loads(
        _patchflow(env2, "missing", "--json")))
    assert distributed_missing == _single_node(tmp_path, api), per_node
    assert distributed_missing["WS-01"] >= {"KB5900110", "7zip.7zip"}

    # 3. The scheduled policy scan, on node 2, with its auto-install: the worker fetches the
    # installers onto the storage; the agents get them from node 1, which serves the storage.
    for agent in agents:
        agent.start()
    scheduled = run(f"policy-workstations@{INSTANCE}", "node2", timeout=240)
    assert worker_of(scheduled) == "node2"
    jobs = _rows(engine, "SELECT id, status, `trigger` FROM install_jobs")
    assert len(jobs) == 1 and jobs[0][1:] == ("done", "scheduled"), jobs
    items = _rows(engine, "SELECT e.hostname, i.state, i.content_sha256 FROM install_job_items i "
                          "JOIN endpoints e ON e.id = i.endpoint_id WHERE i.job_id = :j",
                  j=jobs[0][0])
    assert items and {host for host, _s, _c in items} == set(AUTO), items
    assert all(state == "succeeded" for _h, state, _c in items), items
    served = {sha for _h, _s, sha in items if sha}
    assert served
    for sha in served:
        key = Path("sha256") / sha[:2] / sha
        # Fetched from the vendor by node 2, put on the storage, read from there by node 1
        # (the only node the agents talk to) to serve it.
        for holder in (Path(env2["PATCHFLOW_HOME"]) / "content", ssh.root / "store" / "content",
                       home1 / "content"):
            assert (holder / key).is_file(), holder
    ran = {a.doc["hostname"]: a.doc.get("simulate", {}).get("ran", []) for a in agents}
    assert all(ran[host] for host in AUTO) and not any(
        ran[h] for h in ran if h not in AUTO), ran

    # 4. The reports, on node 3: mailed with the SMTP password decrypted from the database by
    # the key in node 3's environment, the files on the storage, opened through node 1.
    reported = run(f"reports@{INSTANCE}", "node3", {"email": ["patch-team@corp.example"]})
    assert worker_of(reported) == "node3"
    assert smtp.logins == ["svc-reports"]
    (_sender, rcpts, message), = smtp.messages
    assert rcpts == ["patch-team@corp.example"] and message["Subject"]
    ((run_id, path, status),) = _rows(engine, "SELECT id, path, status FROM report_runs")
    assert status == "done" and Path(path).is_relative_to(Path(env3["PATCHFLOW_HOME"]).resolve())
    index = ssh.root / "store" / report_key(Path(path)) / "index.html"
    assert index.is_file()
    context = ssl.create_default_context(cafile=str(home1 / "tls" / "server.crt"))
    context.check_hostname = False
    with httpx.Client(base_url=node1.url, verify=context, timeout=30) as http:
        assert log_in(http).status_code == 303
        opened = http.get(f"/console/reports/{run_id}/files/index.html")
        assert opened.status_code == 200 and opened.content == index.read_bytes()
    procs.check_alive()
    # The workers never had the key on disk: it came from their environment only.
    for env in (env2, env3):
        assert not (Path(env["PATCHFLOW_HOME"]) / "secret.key").exists()


def _single_node(tmp_path: Path, api: str) -> dict[str, set[str]]:
    """The same inventories scanned by one process on SQLite (flows reporting to the same
    Prefect server, so no temporary one is started)."""
    began = time.monotonic()
    home = tmp_path / "single" / "home"
    env = _clean_env(PATCHFLOW_HOME=str(home), PREFECT_API_URL=api,
                     PATCHFLOW_DATABASE_URL=f"sqlite:///{home / 'patchflow.db'}")
    fleet = tmp_path / "single" / "fleet.json"
    home.mkdir(parents=True)
    fleet.write_text(json.dumps(FLEET))
    _patchflow(env, "init")
    _patchflow(env, "server", "add", "local", "--host", "localhost", "--msrc-source",
               str(MSRC_DIR), "--winget-source", str(WINGET_DIR), "--winget-packages",
               ",".join(PACKAGES))
    _patchflow(env, "sync", "local")
    _patchflow(env, "endpoints", "import", str(fleet))
    _patchflow(env, "scan", "--all")
    found = _missing_by_endpoint(json.loads(_patchflow(env, "missing", "--json")))
    print(f"single-node scan on SQLite: {time.monotonic() - began:.0f} s")
    return found
