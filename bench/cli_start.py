"""Benchmark how fast a CLI command starts its flow (issue 16 item 1).

Usage: python -m bench.cli_start [--runs 3]

A fresh home on SQLite with the bundled sample catalog as patch server `local`. Then, as
separate processes, exactly as an administrator types it:

1. `patchflow sync local` with the home's Prefect server running (the local server
   `patchflow serve` starts, started here the same way, `deployments.prefect_server`): the
   command reports to it. Measured per run: the flow run's start in Prefect minus the moment the
   command was launched ("flow start"), the whole command, and the flow's own run time.
2. the same command on a second home with no server: Prefect's temporary server is started by
   the command (what every CLI run cost before), the one-line notice included.

Target: with a running server the command starts its flow in under 2 s. The ratio printed is
the temporary-server command over the served one (whole commands, medians).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import free_port

ROOT = Path(__file__).resolve().parent.parent
TARGET_START_S = 2.0


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PATCHFLOW_"))}
    env.update({"PATCHFLOW_HOME": str(home), "PYTHONPATH": str(ROOT),
                "PATCHFLOW_DATABASE_URL": f"sqlite:///{home / 'patchflow.db'}",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"})
    return env


def _cli(env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float,
                                                    dt.datetime]:
    launched = dt.datetime.now(dt.UTC)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"`patchflow {' '.join(args)}` failed: {done.stderr.strip()[-300:]}")
    return done, took, launched


def _home(path: Path) -> dict[str, str]:
    from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR

    env = _env(path)
    _cli(env, "init", "--host", "localhost")
    _cli(env, "server", "add", "local", "--host", "localhost", "--msrc-source", str(MSRC_DIR),
         "--winget-source", str(WINGET_DIR), "--winget-packages", ",".join(PACKAGES))
    return env


def _flow_run(api: str, db_url: str) -> dict[str, Any]:
    import httpx
    from sqlalchemy import create_engine, text

    engine = create_engine(db_url)
    with engine.connect() as conn:
        run_id = conn.execute(text("SELECT sync_flow_run_id FROM patch_servers")).scalar_one()
    engine.dispose()
    return httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()


def _served(home: Path, runs: int) -> list[dict[str, float]]:
    from deployments.prefect_server import start_for_home

    env = _home(home)
    server = start_for_home(home, free_port())
    try:
        server.wait_healthy()
        out = []
        for _ in range(runs):
            done, took, launched = _cli(env, "sync", "local")
            run = _flow_run(server.api_url, env["PATCHFLOW_DATABASE_URL"])
            started = dt.datetime.fromisoformat(run["start_time"])
            out.append({"command": took, "flow_start": (started - launched).total_seconds(),
                        "flow": float(run["total_run_time"]),
                        "temporary_notice": float("note:" in done.stderr)})
        return out
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_start",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="commands per case (3)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be positive")
    with tempfile.TemporaryDirectory(prefix="patchflow-bench-cli-",
                                     ignore_cleanup_errors=True) as tmp:
        served = _served(Path(tmp) / "served", args.runs)
        env = _home(Path(tmp) / "alone")
        alone = []
        for _ in range(args.runs):
            done, took, _launched = _cli(env, "sync", "local")
            alone.append({"command": took, "notice": float("note:" in done.stderr)})
    load = os.getloadavg()[0]
    print(f"bench.cli_start: `patchflow sync local` (bundled sample catalog, SQLite), {args.runs} "
          f"runs per case, {os.cpu_count()} CPUs, load average {load:.1f}")
    for n, r in enumerate(served, 1):
        print(f"  with the home's Prefect server, run {n}: flow started {r['flow_start']:.2f} s "
              f"after the command was launched; flow ran {r['flow']:.2f} s; whole command "
              f"{r['command']:.2f} s")
    for n, r in enumerate(alone, 1):
        print(f"  no server (temporary one started by the command), run {n}: whole command "
              f"{r['command']:.2f} s{'' if r['notice'] else ' (NO notice line!)'}")
    start = statistics.median(r["flow_start"] for r in served)
    ratio = statistics.median(r["command"] for r in alone) / statistics.median(
        r["command"] for r in served)
    print(f"temporary server / home's server, whole command (medians): {ratio:.1f}x")
    verdict = "met" if start < TARGET_START_S else "MISSED"
    print(f"target: with a running server the command starts its flow in < {TARGET_START_S:.0f} s:"
          f" median {start:.2f} s -> {verdict}")
    if any(r["temporary_notice"] for r in served):
        print("WARNING: a served run printed the temporary-server notice")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
