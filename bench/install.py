"""Install throughput: one install job across many simulated endpoints.

    python -m bench.install [--endpoints 2000] [--work 1.0] [--poll 5] [--connections 64]
                            [--database-url URL]

`patchflow serve` runs as a subprocess on loopback (HTTPS, the real app). The endpoints are
lightweight asyncio agents in this process, sharing a pool of keep-alive TLS connections: each
polls `GET /api/v1/agent/jobs` every `--poll` seconds (jittered), and for its job reports
"downloading", fetches the installer from `/content/sha256/…` and checks its SHA-256, reports
"installing", spends `--work` seconds "installing" (a sleep: the agents' own simulated work),
and posts its result with a result id, as the real agent does. The Prefect `install` flow runs
here too, against Prefect's temporary server (started before the clock runs).

Prints items/s dispatched and completed, the job's wall time, the flow's task runs (counted
from Prefect's API), and the ratio of the job's wall time to the agents' simulated work.
Target on 2 cores: 2,000 items complete in under 60 s; task runs independent of the endpoint
count (compare `--endpoints 200`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import free_port

ROOT = Path(__file__).resolve().parents[1]
PAYLOAD = b"patchflow bench installer\n" * 2048  # 52 KB


# --- a thin HTTP/1.1 client over a pool of keep-alive TLS connections ---------------------------


class Connection:
    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self.port, self.context = port, context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                "127.0.0.1", self.port, ssl=self.context, server_hostname="localhost")
        assert self.reader is not None
        lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "User-Agent: bench-agent"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        status = int((await self.reader.readuntil(b"\r\n")).split(b" ", 2)[1])
        length, chunked, closing = 0, False, False
        while (line := await self.reader.readuntil(b"\r\n")) != b"\r\n":
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and value.strip().lower() == b"close":
                closing = True
        if chunked:
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).strip(), 16):
                parts.append(await self.reader.readexactly(size))
                await self.reader.readuntil(b"\r\n")
            await self.reader.readuntil(b"\r\n")
            data = b"".join(parts)
        else:
            data = await self.reader.readexactly(length) if length else b""
        if closing:
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class Pool:
    def __init__(self, port: int, context: ssl.SSLContext, size: int) -> None:
        self.free: asyncio.Queue[Connection] = asyncio.Queue()
        for _ in range(size):
            self.free.put_nowait(Connection(port, context))

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: Any = None) -> tuple[int, bytes]:
        conn = await self.free.get()
        payload = json.dumps(body).encode() if body is not None else None
        try:
            for attempt in (1, 2):
                try:
                    return await conn.request(method, path, headers, payload)
                except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
                    await conn.close()
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")
        finally:
            self.free.put_nowait(conn)


# --- the simulated fleet ------------------------------------------------------------------------


@dataclass
class FleetStats:
    polls: int = 0
    results: int = 0
    errors: int = 0
    first_error: str = ""
    done: set[str] = field(default_factory=set)


async def run_fleet(port: int, cert: Path, agents: list[dict[str, str]], poll: float,
                    work: float, connections: int, stop: threading.Event,
                    stats: FleetStats) -> None:
    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    pool = Pool(port, context, connections)
    rng = random.Random(5)

    async def post(headers: dict[str, str], item: int, body: dict[str, Any]) -> None:
        status, data = await pool.request("POST", f"/api/v1/agent/jobs/{item}/result",
                                          headers, body)
        if status != 200:
            raise RuntimeError(f"result HTTP {status}: {data[:200]!r}")
        stats.results += 1

    async def agent(headers: dict[str, str], name: str) -> None:
        await asyncio.sleep(rng.uniform(0, poll))
        while not stop.is_set() and name not in stats.done:
            try:
                status, data = await pool.request("GET", "/api/v1/agent/jobs", headers)
                stats.polls += 1
                for job in json.loads(data) if status == 200 else []:
                    attempt = {"attempt": job["attempt"]}
                    await post(headers, job["id"], {"state": "downloading", "details": attempt})
                    status, content = await pool.request("GET", job["installer"]["url"],
                                                         headers)
                    ok = status == 200 and \
                        hashlib.sha256(content).hexdigest() == job["installer"]["sha256"]
                    if ok:
                        await post(headers, job["id"], {"state": "installing",
                                                        "details": attempt})
                        await asyncio.sleep(work)  # the simulated installer
                    await post(headers, job["id"], {
                        "state": "succeeded" if ok else "failed", "exit_code": 0 if ok else None,
                        "message": "installed" if ok else "hash mismatch",
                        "details": {**attempt, "result_id": uuid.uuid4().hex}})
                    stats.done.add(name)
            except Exception as exc:  # a bench agent keeps going, and counts the failure
                stats.errors += 1
                stats.first_error = stats.first_error or repr(exc)
            await asyncio.sleep(poll * rng.uniform(0.8, 1.2))

    await asyncio.gather(*(agent({k: v for k, v in a.items() if k != "name"}, a["name"])
                           for a in agents))


# --- setup --------------------------------------------------------------------------------------


def seed(count: int) -> tuple[list[dict[str, str]], int]:
    """One patch with one installer (content already stored), `count` enrolled endpoints each
    missing it; returns the agents' credentials and the patch id."""
    from sqlalchemy import insert, select

    from models import Endpoint, MissingPatch, Patch, PatchInstaller, PatchServer, ServerPatch
    from models.base import utcnow
    from models.db import session_scope
    from patchflow import crypto
    from patchflow.catalog.content import ContentStore

    sha = hashlib.sha256(PAYLOAD).hexdigest()
    ContentStore().put_bytes(PAYLOAD, sha)
    agents = []
    with session_scope() as session:
        server = PatchServer(name="local", host="localhost")
        patch = Patch(source="winget", ukey="Bench.App@2.0", package_id="Bench.App",
                      version="2.0", title="Bench App 2.0", vendor="Bench",
                      category="Applications")
        session.add_all([server, patch])
        session.flush()
        session.add(PatchInstaller(patch_id=patch.id, url="https://vendor.invalid/app-2.0.msi",
                                   sha256=sha, type="msi", arch="x64"))
        session.add(ServerPatch(server_id=server.id, patch_id=patch.id, revision=1))
        now = utcnow()
        rows = []
        for n in range(count):
            secret, agent_id = crypto.new_token(), str(uuid.uuid4())
            name = f"BENCH-{n:05d}"
            rows.append({"hostname": name, "agent_id": agent_id,
                         "secret_hash": crypto.hash_token(secret), "revoked": False,
                         "enrolled_at": now, "last_seen": now, "last_ip": "127.0.0.1",
                         "os_name": "Windows 11 Pro", "os_build": 22631, "os_ubr": 6000,
                         "os_arch": "x64", "os_language": "en-US", "hotpatch": False,
                         "pending_reboot": False, "roaming": False,
                         "scan_state": "Missing Patches"})
            agents.append({"name": name, "X-Agent-Id": agent_id,
                           "Authorization": f"Bearer {secret}"})
        session.execute(insert(Endpoint), rows)
        ids = list(session.scalars(select(Endpoint.id).order_by(Endpoint.id)))
        session.execute(insert(MissingPatch), [
            {"endpoint_id": e, "patch_id": patch.id, "reason": "Bench App 1.0 (x64) < 2.0",
             "detected_at": now} for e in ids])
        return agents, patch.id


def wait_until_up(port: int, cert: Path, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    context = ssl.create_default_context(cafile=str(cert))
    context.check_hostname = False
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(f"https://127.0.0.1:{port}/api/v1/health", verify=context, timeout=5)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("server did not start:\n" + log.read_text()[-2000:]) from None
            time.sleep(0.2)


def task_runs(flow_run_id: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return len(client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[uuid.UUID(flow_run_id)])), limit=200))


def timings(job_id: int) -> dict[str, float]:
    """Dispatch and completion instants from the items themselves."""
    from sqlalchemy import func, select

    from models import InstallJob, InstallJobItem
    from models.db import session_scope

    with session_scope() as session:
        started = session.scalar(select(InstallJob.started_at).where(InstallJob.id == job_id))
        first_d, last_d, last_f = session.execute(
            select(func.min(InstallJobItem.dispatched_at), func.max(InstallJobItem.dispatched_at),
                   func.max(InstallJobItem.finished_at)).where(InstallJobItem.job_id == job_id)
        ).one()
    assert started and first_d and last_d and last_f
    return {"dispatch_s": (last_d - started).total_seconds(),
            "complete_s": (last_f - started).total_seconds()}


# --- the run ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.install", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=2000)
    parser.add_argument("--work", type=float, default=1.0,
                        help="seconds each simulated install takes (default 1.0)")
    parser.add_argument("--poll", type=float, default=5.0,
                        help="agents' poll interval in seconds, ±20%% jitter (default 5)")
    parser.add_argument("--connections", type=int, default=64,
                        help="keep-alive TLS connections the agents share (default 64)")
    parser.add_argument("--flow-poll", type=float, default=0.5,
                        help="how often the flow looks at the items (default 0.5 s)")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="patchflow-bench-install-") as tmp:
        work = Path(tmp)
        os.environ["PATCHFLOW_HOME"] = str(work / "home")
        os.environ["PATCHFLOW_DATABASE_URL"] = args.database_url or \
            f"sqlite:///{work / 'home' / 'patchflow.db'}"
        os.environ["PREFECT_HOME"] = str(work / "prefect")
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        from patchflow.ops import prefect_env

        prefect_env.configure()
        from cli.main import main as cli

        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            if cli(["init"]) != 0:
                return 1
        start = time.perf_counter()
        agents, patch_id = seed(args.endpoints)
        print(f"seeded {args.endpoints} endpoints in {time.perf_counter() - start:.1f} s",
              flush=True)
        port, log = free_port(), work / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port",
                 str(port), "--no-access-log"], cwd=ROOT, env=dict(os.environ), stdout=out,
                stderr=out)
        cert = work / "home" / "tls" / "server.crt"
        try:
            wait_until_up(port, cert, server, log)
            code = _run(args, agents, patch_id, port, cert)
            if code:
                print("server log (last lines):\n" + log.read_text()[-3000:])
            return code
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


def _run(args: argparse.Namespace, agents: list[dict[str, str]], patch_id: int, port: int,
         cert: Path) -> int:
    from prefect import flow
    from prefect.server.api.server import SubprocessASGIServer
    from sqlalchemy import select

    from flows.install import install
    from models import Endpoint
    from models.db import session_scope
    from patchflow.install import create_job
    from patchflow.install.settings import InstallSettings

    @flow(name="bench-warm-up")
    def warm_up() -> None:
        return None

    try:
        start = time.perf_counter()
        warm_up()
        print(f"Prefect temporary server up in {time.perf_counter() - start:.1f} s", flush=True)
        with session_scope() as session:
            ids = list(session.scalars(select(Endpoint.id)))
            start = time.perf_counter()
            job_id = create_job(session, [(patch_id, e) for e in ids], "bench",
                                settings=InstallSettings(item_timeout_s=120)).id
        created = time.perf_counter() - start
        stop, stats = threading.Event(), FleetStats()
        fleet = threading.Thread(target=lambda: asyncio.run(run_fleet(
            port, cert, agents, args.poll, args.work, args.connections, stop, stats)),
            daemon=True)
        fleet.start()
        start = time.perf_counter()
        summary = install(job_id, poll_seconds=args.flow_poll)
        wall = time.perf_counter() - start
        stop.set()
        fleet.join(timeout=2 * args.poll + 10)
        from models import InstallJob

        with session_scope() as session:
            run_id = session.scalar(select(InstallJob.flow_run_id)
                                    .where(InstallJob.id == job_id))
        runs = task_runs(str(run_id))
        marks = timings(job_id)
    finally:
        for prefect_server in list(SubprocessASGIServer._instances.values()):
            prefect_server.stop()
    n = args.endpoints
    print(f"\njob {job_id}: {summary['summary']} ({summary['items']} items); "
          f"job created in {created:.2f} s")
    print(f"  dispatched: {n} items in {marks['dispatch_s']:.2f} s after start "
          f"= {n / max(marks['dispatch_s'], 1e-6):,.0f} items/s")
    print(f"  completed:  {n} items in {marks['complete_s']:.2f} s after start "
          f"= {n / max(marks['complete_s'], 1e-6):,.0f} items/s")
    print(f"  job wall time (flow start to summary): {wall:.2f} s  [target < 60 s: "
          f"{'met' if wall < 60 and summary['succeeded'] == n else 'NOT met'}]")
    print(f"  flow task runs: {runs} (independent of the endpoint count)")
    print(f"  agents: {stats.polls} polls, {stats.results} result posts, {stats.errors} errors"
          + (f" (first: {stats.first_error})" if stats.errors else ""))
    print(f"  ratio job wall time / one agent's simulated work ({args.work:.1f} s): "
          f"{wall / args.work:.1f}x; / the fleet's total simulated work "
          f"({n * args.work:,.0f} s): {wall / (n * args.work):.4f}")
    print(f"  (agents poll every {args.poll:.1f} s ±20%, so up to {args.poll * 1.2:.1f} s of "
          "the wall time is waiting for the next poll)")
    return 0 if summary["succeeded"] == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
