"""Benchmark replication: 20,000 patches from one patchflow instance to another on loopback.

Usage: python -m bench.replication [--patches N] [--page N] [--no-mariadb] [--json]

Instance A (SQLite) holds N patches on its "local" patch server (half Microsoft KBs with two
products, two CVEs and supersedence, half third-party versions with an installer) and runs
`patchflow serve` as a subprocess. Instance B adds `branch` with `--upstream https://A` (token,
pinned certificate) and runs the replica connector's batch (what the sync's `replicate` task
runs, without Prefect's task engine, whose fixed cost is not the point): every page is fetched over
HTTPS, checked and applied in its own transaction. Measured on B's SQLite, then on a fresh
MariaDB database when one is reachable.

Baseline: A's own time to read the same rows from its database, i.e. `changes_page` over all
pages without HTTP or JSON. The ratio says what the network, the checks and B's writes add.
Target: 20,000 patches in under 20 s.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import free_port, mariadb_database

ROOT = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 20.0


def _records(count: int) -> list[Any]:
    from sources.records import InstallerRecord, PatchRecord, ProductRow

    records = []
    for n in range(count):
        if n % 2 == 0:
            kb = 5_000_000 + n
            records.append(PatchRecord(
                source="msrc", key=f"KB{kb}", kb=f"KB{kb}", title=f"Cumulative Update {n}",
                vendor="Microsoft", category="Security Updates", severity="Important",
                restart_required="Required",
                products=(ProductRow("Windows 11 Version 23H2 for x64-based Systems",
                                     f"10.0.22631.{n}", f"KB{kb - 2}" if n else None),
                          ProductRow("Windows Server 2022", f"10.0.20348.{n}")),
                cves=(f"CVE-2024-{10000 + n}", f"CVE-2024-{40000 + n}"),
                supersedes=(f"KB{kb - 2}",) if n else ()))
        else:
            version = f"1.{n}"
            records.append(PatchRecord(
                source="winget", key=f"Bench.App{n % 50}@{version}",
                package_id=f"Bench.App{n % 50}", version=version,
                title=f"Bench App {n % 50} {version}", vendor="Bench", category="Applications",
                restart_required="Not Required",
                installers=(InstallerRecord(
                    url=f"https://vendor.example/app{n}.msi",
                    sha256=hashlib.sha256(str(n).encode()).hexdigest(), type="msi",
                    arch="x64", scope="machine", product_code=f"{{BENCH-{n}}}"),)))
    return records


@contextlib.contextmanager
def _home(path: Path, db_url: str | None = None) -> Iterator[str]:
    """Point patchflow at one instance's home for the duration."""
    url = db_url or f"sqlite:///{path / 'patchflow.db'}"
    saved = {k: os.environ.get(k) for k in ("PATCHFLOW_HOME", "PATCHFLOW_DATABASE_URL")}
    os.environ["PATCHFLOW_HOME"], os.environ["PATCHFLOW_DATABASE_URL"] = str(path), url
    try:
        yield url
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _init(home: Path, db_url: str | None = None) -> None:
    from models.migrate import upgrade
    from patchflow.ops import tls

    with _home(home, db_url) as url:
        home.mkdir(parents=True, exist_ok=True)
        upgrade(url)
        tls.generate_self_signed("localhost", home / "tls" / "server.crt",
                                 home / "tls" / "server.key")


def _seed(home: Path, count: int) -> tuple[float, str]:
    from models.db import session_scope
    from patchflow.catalog import replication, servers
    from patchflow.catalog.catalog_store import store_document
    from sources.filters import Filters
    from sources.records import ParsedDocument

    records = _records(count)
    started = time.perf_counter()
    with _home(home) as url:
        with session_scope(url) as session:
            server = servers.add_server(session, "local", servers.ServerOptions(host="a"))
            server_id = server.id
        for start in range(0, count, 2000):
            with session_scope(url) as session:
                store_document(session, server_id, ParsedDocument(
                    key=str(start), release_date=None, content_hash="",
                    patches=records[start : start + 2000]), Filters())
        with session_scope(url) as session:
            token = replication.create_token(session, "bench")
    return time.perf_counter() - started, token


@contextlib.contextmanager
def _serve(home: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "PATCHFLOW_HOME": str(home),
           "PATCHFLOW_DATABASE_URL": f"sqlite:///{home / 'patchflow.db'}"}
    log = (home / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--no-access-log", "--no-scheduler"], cwd=ROOT, env=env, stdout=log, stderr=log)
    context = ssl.create_default_context(cafile=str(home / "tls" / "server.crt"))
    import httpx

    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                if httpx.get(f"https://127.0.0.1:{port}/api/v1/health", verify=context,
                             timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("patchflow serve did not start: "
                                   + (home / "serve.log").read_text())
            time.sleep(0.1)
        yield f"https://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(30)


def _baseline(home: Path, page: int) -> tuple[float, int]:
    """A's own read of every page from its database (best of two)."""
    from models.db import session_scope
    from patchflow.catalog import replication

    best, rows = float("inf"), 0
    with _home(home) as url:
        for _ in range(2):
            started = time.perf_counter()
            since, rows = 0, 0
            with session_scope(url) as session:
                server = replication.served_server(session, None)
                while True:
                    data = replication.changes_page(session, server, since, page)
                    rows += len(data["patches"])
                    since = data["next"]
                    if not data["more"]:
                        break
            best = min(best, time.perf_counter() - started)
    return best, rows


def _replicate(home: Path, db_url: str | None, upstream: str, token: str, fingerprint: str,
               page: int) -> tuple[float, int, str | None]:
    from models.db import session_scope
    from patchflow import config
    from patchflow.catalog import servers
    from patchflow.upstreams import replica

    _init(home, db_url)
    with _home(home, db_url) as url:
        config.write_config({"replication": {"page_size": page}})
        with session_scope(url) as session:
            server = servers.add_server(session, "branch", servers.ServerOptions(
                host="b", upstream=upstream, upstream_token=token,
                upstream_fingerprint=fingerprint))
            server_id = server.id
        started = time.perf_counter()
        outcome = replica.CONNECTOR.sync_batch(server_id, None, 0, 1, logging.getLogger("bench"))
        elapsed = time.perf_counter() - started
        return elapsed, int(outcome["patches"]), outcome["error"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replication",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--patches", type=int, default=20_000)
    parser.add_argument("--page", type=int, default=1000, help="page size (default 1000)")
    parser.add_argument("--no-mariadb", action="store_true", help="downstream on SQLite only")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    logging.getLogger("bench").setLevel(logging.WARNING)
    figures: dict[str, Any] = {"patches": args.patches, "page": args.page}
    with tempfile.TemporaryDirectory(prefix="patchflow-bench-repl-") as tmp:
        work = Path(tmp)
        a = work / "a"
        _init(a)
        seeded, token = _seed(a, args.patches)
        print(f"upstream: {args.patches} patches stored in {seeded:.1f} s")
        base, rows = _baseline(a, args.page)
        figures["baseline_s"] = round(base, 3)
        print(f"baseline: upstream reads the same {rows} patches from its database in "
              f"{base:.2f} s ({rows / base:,.0f} patches/s)")
        from patchflow.ops import tls

        fingerprint = tls.fingerprint(a / "tls" / "server.crt")
        ok = True
        with _serve(a) as url:
            targets: list[tuple[str, str | None]] = [("sqlite", None)]
            with contextlib.ExitStack() as stack:
                if not args.no_mariadb:
                    maria = stack.enter_context(mariadb_database("patchflow_bench_repl"))
                    if maria:
                        targets.append(("mariadb", maria))
                for name, db_url in targets:
                    elapsed, patches, error = _replicate(work / f"b-{name}", db_url, url, token,
                                                         fingerprint, args.page)
                    rate = patches / elapsed if elapsed else 0.0
                    verdict = "ok" if patches == args.patches and elapsed < TARGET_SECONDS \
                        else "MISSED"
                    if error:
                        verdict = f"FAILED ({error})"
                    ok = ok and verdict == "ok"
                    figures[name] = {"seconds": round(elapsed, 2), "patches": patches,
                                     "patches_per_s": round(rate), "ratio": round(elapsed / base,
                                                                                  1)}
                    print(f"replicate to {name}: {patches} patches in {elapsed:.1f} s = "
                          f"{rate:,.0f} patches/s, {elapsed / base:.1f}x the upstream's own "
                          f"read; target {args.patches} in < {TARGET_SECONDS:.0f} s: {verdict}")
    if args.json:
        print(json.dumps(figures))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
