"""Agent API throughput: many simulated agents uploading 200-program inventories and polling for
jobs against `patchflow serve` (a subprocess on loopback, HTTPS), compared with a bare FastAPI
app that accepts and discards the same requests under the same uvicorn and TLS settings.

    python -m bench.agent_api [--seconds 8] [--agents 200] [--workers 1] [--database-url URL]

Prints inventories/s, polls/s, p50/p99 latency, the server's peak memory, and the ratio to the
bare baseline. Targets (2 cores, SQLite): >= 200 inventories/s, >= 1,000 polls/s, p99 < 500 ms.

The load generator is a deliberately thin asyncio HTTP/1.1 client over keep-alive TLS
connections, one per simulated agent: on a 2-core machine the client shares the CPU with the
server, and a heavier client would measure itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
INVENTORY_PATH = "/api/v1/agent/inventory"
JOBS_PATH = "/api/v1/agent/jobs"

BASELINE_APP = textwrap.dedent('''
    """The baseline: the same routes accepting and discarding the same requests, served the
    way `patchflow serve` serves (same socket setup, uvicorn options and TLS)."""
    import sys

    import uvicorn
    from fastapi import FastAPI, Request

    app = FastAPI()

    @app.put("/api/v1/agent/inventory")
    async def inventory(request: Request) -> dict:
        await request.body()
        return {"ok": True}

    @app.get("/api/v1/agent/jobs")
    async def jobs() -> list:
        return []

    if __name__ == "__main__":
        from server.run import listening_socket

        port, workers, cert, key = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
        config = uvicorn.Config("bare_app:app", host="127.0.0.1", port=port, workers=workers,
                                ssl_certfile=cert, ssl_keyfile=key, access_log=False,
                                log_level="warning", server_header=False)
        sock = listening_socket("127.0.0.1", port)
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(config, sockets=[sock]).run()
        else:
            uvicorn.Server(config).run(sockets=[sock])
''')


# --- documents and credentials ----------------------------------------------------------------


def inventory(hostname: str, programs: int) -> dict[str, Any]:
    """A realistic document: 200 programs with versions, publishers, some MSI codes, 60 KBs."""
    return {
        "schema_version": 1,
        "hostname": hostname,
        "domain": "corp.example",
        "os": {"name": "Windows 11 Enterprise", "display_version": "23H2", "build": 22631,
               "ubr": 3737, "arch": "x64", "language": "en-US", "hotpatch": False},
        "programs": [
            {"name": f"Application {i} (x64 en-US)", "version": f"{i % 30}.{i % 7}.{i}.0",
             "publisher": f"Vendor {i % 40} Corporation",
             "product_code": f"{{{i:08X}-1234-5678-9ABC-DEF012345678}}" if i % 3 == 0 else None,
             "upgrade_code": None, "arch": "x64" if i % 4 else "x86", "scope": "machine",
             "install_date": f"2025-{1 + i % 12:02d}-{1 + i % 28:02d}"}
            for i in range(programs)
        ],
        "updates": [{"kb": f"KB50{30000 + i}", "installed_on": "2024-01-10"} for i in range(60)],
        "pending_reboot": False,
        "collected_at": "2026-11-29T10:00:00Z",
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- a thin HTTP/1.1 client ---------------------------------------------------------------------


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""

    def summary(self, seconds: float) -> dict[str, float]:
        values = sorted(self.latencies)
        if not values:
            return {"count": 0, "rate": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
        p99 = values[min(len(values) - 1, int(len(values) * 0.99))]
        return {"count": len(values), "rate": len(values) / seconds,
                "p50_ms": statistics.median(values) * 1000, "p99_ms": p99 * 1000}


class Connection:
    def __init__(self, host: str, port: int, context: ssl.SSLContext) -> None:
        self.host, self.port, self.context = host, port, context
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes = b"") -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.context, server_hostname="localhost")
        assert self.reader is not None
        self.writer.write(head + body)
        status_line = await self.reader.readuntil(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        closing = False
        while True:
            line = await self.reader.readuntil(b"\r\n")
            if line == b"\r\n":
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                closing = True
        if length:
            await self.reader.readexactly(length)
        if closing:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def request_head(method: str, path: str, headers: dict[str, str], length: int | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: localhost", "User-Agent: bench"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def load(port: int, context: ssl.SSLContext, requests: list[tuple[bytes, bytes]],
               concurrency: int, seconds: float) -> Stats:
    """`concurrency` agents, each on its own connection, cycling through prepared requests."""
    stats = Stats()
    deadline = time.perf_counter() + seconds

    async def agent(index: int) -> None:
        conn = Connection("127.0.0.1", port, context)
        n = index
        try:
            while time.perf_counter() < deadline:
                head, body = requests[n % len(requests)]
                n += concurrency
                start = time.perf_counter()
                try:
                    status = await conn.request(head, body)
                except (OSError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
                    stats.errors += 1
                    stats.first_error = stats.first_error or repr(exc)
                    await conn.close()
                    continue
                if status >= 300:
                    stats.errors += 1
                    stats.first_error = stats.first_error or f"HTTP {status}"
                    continue
                stats.latencies.append(time.perf_counter() - start)
        finally:
            await conn.close()

    await asyncio.gather(*(agent(i) for i in range(concurrency)))
    return stats


# --- servers ----------------------------------------------------------------------------------


def peak_rss_mb(pids: list[int]) -> float:
    """Peak resident memory (VmHWM) summed over the server's processes."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def process_tree(pid: int) -> list[int]:
    try:
        import psutil  # type: ignore[import-untyped,unused-ignore]

        parent = psutil.Process(pid)
        return [pid] + [child.pid for child in parent.children(recursive=True)]
    except ImportError:
        pass
    pids = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) in pids:
                pids.append(int(entry.name))
    return pids


def wait_until_up(port: int, context: ssl.SSLContext, process: subprocess.Popen[bytes],
                  log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(f"https://127.0.0.1:{port}/api/v1/agent/jobs", verify=context, timeout=5)
            return
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("server did not start:\n" + log.read_text()[-2000:]) from None
            time.sleep(0.2)


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=out)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


# --- the run ----------------------------------------------------------------------------------


def enroll_agents(port: int, context: ssl.SSLContext, count: int) -> list[dict[str, str]]:
    import httpx

    from models.db import session_scope
    from patchflow import fleet

    with session_scope() as session:
        token, _row = fleet.create_enrollment_token(session, uses=count)
    agents = []
    with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=30) as client:
        for n in range(count):
            hostname = f"BENCH-{n:05d}"
            response = client.post("/api/v1/agent/enroll",
                                   json={"token": token, "hostname": hostname})
            response.raise_for_status()
            body = response.json()
            agents.append({"hostname": hostname, "X-Agent-Id": body["agent_id"],
                           "Authorization": f"Bearer {body['secret']}"})
    return agents


def prepared(agents: list[dict[str, str]], programs: int) -> tuple[list[Any], list[Any], int]:
    uploads, polls = [], []
    size = 0
    for agent in agents:
        headers = {k: v for k, v in agent.items() if k != "hostname"}
        body = json.dumps(inventory(agent["hostname"], programs)).encode()
        size = len(body)
        uploads.append((request_head("PUT", INVENTORY_PATH, headers, len(body)), body))
        polls.append((request_head("GET", JOBS_PATH, headers, None), b""))
    return uploads, polls, size


def measure(port: int, context: ssl.SSLContext, uploads: list[Any], polls: list[Any],
            args: argparse.Namespace) -> dict[str, dict[str, float]]:
    results = {}
    for name, requests, concurrency in (("inventories", uploads, args.concurrency),
                                        ("polls", polls, args.poll_concurrency)):
        stats = asyncio.run(load(port, context, requests, concurrency, args.seconds))
        results[name] = stats.summary(args.seconds)
        results[name]["errors"] = stats.errors
        if stats.errors:
            print(f"  {name}: {stats.errors} errors, first: {stats.first_error}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent_api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="per measured phase")
    parser.add_argument("--agents", type=int, default=200, help="enrolled simulated agents")
    parser.add_argument("--concurrency", type=int, default=32, help="agents uploading at once")
    parser.add_argument("--poll-concurrency", type=int, default=64,
                        help="agents polling at once")
    parser.add_argument("--programs", type=int, default=200, help="programs per inventory")
    parser.add_argument("--workers", type=int, default=1, help="`patchflow serve --workers`")
    parser.add_argument("--database-url", help="e.g. mysql+pymysql://root@127.0.0.1/bench "
                                               "(default: SQLite in a temporary home)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare FastAPI run")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="patchflow-bench-") as tmp:
        home = Path(tmp) / "home"
        os.environ["PATCHFLOW_HOME"] = str(home)
        if args.database_url:
            os.environ["PATCHFLOW_DATABASE_URL"] = args.database_url
        else:
            os.environ.pop("PATCHFLOW_DATABASE_URL", None)
        from cli.main import main as patchflow

        if patchflow(["init", "--host", "localhost"]) != 0:
            return 1
        cert, key = home / "tls" / "server.crt", home / "tls" / "server.key"
        context = ssl.create_default_context(cafile=str(cert))
        env = {**os.environ}

        port = free_port()
        log = Path(tmp) / "serve.log"
        server = start([sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1",
                        "--port", str(port), "--no-access-log", "--workers",
                        str(args.workers)], env, log)
        try:
            wait_until_up(port, context, server, log)
            began = time.perf_counter()
            agents = enroll_agents(port, context, args.agents)
            enroll_rate = args.agents / (time.perf_counter() - began)
            uploads, polls, size = prepared(agents, args.programs)
            ours = measure(port, context, uploads, polls, args)
            memory = peak_rss_mb(process_tree(server.pid))
        finally:
            stop(server)

        baseline = None
        if not args.no_baseline:
            app_dir = Path(tmp) / "baseline"
            app_dir.mkdir()
            (app_dir / "bare_app.py").write_text(BASELINE_APP)
            port = free_port()
            log = Path(tmp) / "bare.log"
            bare_env = {**env, "PYTHONPATH": os.pathsep.join([str(app_dir), str(ROOT)])}
            bare = start([sys.executable, str(app_dir / "bare_app.py"), str(port),
                          str(args.workers), str(cert), str(key)], bare_env, log)
            try:
                wait_until_up(port, context, bare, log)
                baseline = measure(port, context, uploads, polls, args)
            finally:
                stop(bare)

    report(args, ours, baseline, memory, size, enroll_rate)
    return 0


def report(args: argparse.Namespace, ours: dict[str, dict[str, float]],
           baseline: dict[str, dict[str, float]] | None, memory: float, size: int,
           enroll_rate: float) -> None:
    database = "MariaDB/MySQL" if args.database_url else "SQLite"
    print(f"\npatchflow agent API on {database}, {args.workers} worker(s), "
          f"{os.cpu_count()} CPUs, {args.seconds:.0f} s per phase")
    print(f"  enrollment: {args.agents} agents at {enroll_rate:.0f}/s")
    labels = {"inventories": f"inventories ({args.programs} programs, {size // 1024} KB, "
                             f"{args.concurrency} agents at once)",
              "polls": f"job polls ({args.poll_concurrency} agents at once)"}
    for name in ("inventories", "polls"):
        r = ours[name]
        line = (f"  {labels[name]}: {r['rate']:.0f}/s, p50 {r['p50_ms']:.1f} ms, "
                f"p99 {r['p99_ms']:.1f} ms")
        if baseline:
            b = baseline[name]
            ratio = r["rate"] / b["rate"] if b["rate"] else 0.0
            line += f"; bare FastAPI {b['rate']:.0f}/s, ratio {ratio:.2f}"
        print(line)
    print(f"  server peak memory: {memory:.0f} MB")
    p99 = max(ours["inventories"]["p99_ms"], ours["polls"]["p99_ms"])
    checks = [("inventories/s >= 200", ours["inventories"]["rate"] >= 200),
              ("polls/s >= 1000", ours["polls"]["rate"] >= 1000),
              ("p99 < 500 ms", p99 < 500),
              ("no errors", not ours["inventories"]["errors"] and not ours["polls"]["errors"])]
    print("  targets: " + ", ".join(f"{name} {'ok' if ok else 'MISSED'}" for name, ok in checks))


if __name__ == "__main__":
    sys.exit(main())
