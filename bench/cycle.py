"""The patch cycle's orchestration cost: one cycle over a fleet in 3 rings, simulated results.

    python -m bench.cycle [--endpoints 10000] [--small 1000] [--programs 30]
                          [--database-url URL]

Per fleet size (each in a child process with a fresh home on SQLite, or `--database-url`, and
its own Prefect temporary server, started before any clock runs):

1. setup (not timed): patch server "local" synced from the bundled sample catalog by the real
   `sync` flow, and a synthetic fleet (applicability.synthetic, `--programs` programs per
   endpoint) bulk-inserted as bench/scan.py does; groups ring-1/ring-2/ring-3 (5 %, 25 %,
   70 % of the endpoints), policy "Bench" with rings pilot → early → broad (95 % gates, no
   delay). The
   two application patches missing on most endpoints are approved for the three groups; their
   installers point at a file already in the content store (no download).
2. simulated agents: a thread that, every 0.2 s, marks every install item handed to an agent
   as succeeded (exit code 0) in the database, as a fleet of honest agents would report; the
   inventories do not change, so the verification flags every item (its worst case).
3. each step run alone, timed, in the cycle's order: the `scan` flow over the policy, the
   plan (patchflow.cycle.plan.build_plan), per ring an install job and the `install` flow,
   the verification (the `scan` flow over the touched endpoints, then the flagging), the run's
   summary. The sync step is skipped by both (the catalog was synced during setup).
4. the `patchflow-cycle` flow on the same data (the plan is the same: nothing was really
   installed), timed from call to return.

Prints the task runs of the cycle (its own, and with its sub-flows, counted from Prefect's
API) for both fleet sizes, and the orchestration overhead: the cycle's wall time minus the sum
of its steps run alone. The cycle's own task runs do not depend on the endpoint count; the
scan sub-flow maps one task per batch of BATCH_SIZE endpoints, so the sub-flows' total grows
by one per batch. Target: overhead under 15 s at 10,000 endpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_OVERHEAD_S = 15.0
PAYLOAD = b"patchflow bench cycle installer\n" * 1024
RINGS = (("pilot", "ring-1", 0.05), ("early", "ring-2", 0.25), ("broad", "ring-3", 0.70))
APPROVED = 2  # application patches approved (the most missing ones)


# --- setup ----------------------------------------------------------------------------------


def _setup(url: str, endpoints: int, programs: int) -> None:
    """Schema, patch server "local" synced from the sample catalog, the synthetic fleet."""
    from applicability.synthetic import synthetic_fleet
    from bench.scan import SEED, insert_fleet
    from flows.sync import sync as sync_flow
    from models.db import session_scope
    from models.migrate import upgrade
    from patchflow.catalog import servers
    from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
    from patchflow.scanning.scan_store import load_catalog

    upgrade(url)
    opts = servers.ServerOptions(host="bench.example", msrc_source=str(MSRC_DIR),
                                 winget_source=str(WINGET_DIR), winget_packages=list(PACKAGES))
    with session_scope() as session:
        servers.add_server(session, "local", opts)
    synced = sync_flow("local")
    if synced["status"] != "Successful":
        raise RuntimeError(f"sync failed: {synced['message']}")
    with session_scope() as session:
        catalog = load_catalog(session)
    ms = catalog.ms_catalog.sort_values(["kb", "product"]).reset_index(drop=True)
    apps = catalog.app_catalog.sort_values(["package_id", "version", "arch"]).reset_index(
        drop=True)
    insert_fleet(synthetic_fleet(ms, apps, endpoints, programs, SEED))


def _seed_policy(endpoints: int) -> list[int]:
    """Groups, policy, rings, approvals and installer content; returns the approved patches."""
    from sqlalchemy import func, select, update

    from models import Endpoint, Group, MissingPatch, Patch, PatchInstaller, PatchServer, Policy
    from models.db import session_scope
    from patchflow.catalog.content import ContentStore
    from patchflow.cycle.rings import add_ring
    from patchflow.install import approvals

    sha = hashlib.sha256(PAYLOAD).hexdigest()
    ContentStore().put_bytes(PAYLOAD, sha)
    with session_scope() as session:
        server = session.scalar(select(PatchServer).where(PatchServer.name == "local"))
        assert server is not None
        policy = Policy(name="Bench", patch_server_id=server.id)
        session.add(policy)
        session.flush()
        ids = list(session.scalars(select(Endpoint.id).order_by(Endpoint.id)))
        start = 0
        for n, (_ring, group_name, share) in enumerate(RINGS):
            group = Group(name=group_name, policy_id=policy.id)
            session.add(group)
            session.flush()
            end = len(ids) if n == len(RINGS) - 1 else start + round(share * len(ids))
            chunk = ids[start:end]
            for i in range(0, len(chunk), 5000):
                session.execute(update(Endpoint).where(Endpoint.id.in_(chunk[i:i + 5000]))
                                .values(group_id=group.id))
            start = end
        session.flush()
        for ring, group_name, _share in RINGS:
            add_ring(session, "Bench", ring, [group_name], "bench")
    # The plan needs missing pairs: one scan of the fleet (the real scan tasks, no Prefect).
    _scan_direct()
    with session_scope() as session:
        top = session.execute(
            select(MissingPatch.patch_id, func.count().label("n"))
            .join(Patch, Patch.id == MissingPatch.patch_id)
            .where(Patch.package_id.is_not(None))
            .group_by(MissingPatch.patch_id).order_by(func.count().desc(), MissingPatch.patch_id)
            .limit(APPROVED)).all()
        chosen = [int(r.patch_id) for r in top]
        session.execute(update(PatchInstaller).where(PatchInstaller.patch_id.in_(chosen))
                        .values(sha256=sha, url="https://vendor.invalid/bench-installer.msi"))
        for patch_id in chosen:
            approvals.approve(session, str(patch_id), [g for _r, g, _s in RINGS], "bench")
    return chosen


def _scan_direct() -> None:
    from prefect.logging import disable_run_logger

    from patchflow.scanning.service import BATCH_SIZE, batches
    from tasks import scan as t

    with disable_run_logger():
        started = t.start_scan.fn({"policy": "Bench"}, "manual", None)
        catalog = t.load_catalog_task.fn()
        results = [t.scan_batch.fn(started["scan_id"], part, catalog)
                   for part in batches(started["endpoint_ids"], BATCH_SIZE)]
        t.finish_scan.fn(started["scan_id"], results)


# --- simulated agents -----------------------------------------------------------------------


class SimulatedAgents:
    """Every item handed to an agent succeeds on the next tick (one UPDATE for the fleet)."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.done = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-agents")

    def __enter__(self) -> SimulatedAgents:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        from sqlalchemy import update

        from models import InstallJobItem
        from models.base import utcnow
        from models.db import session_scope
        from patchflow.install import states as st

        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception), session_scope() as session:  # retried next tick
                now = utcnow()
                self.done += session.execute(
                    update(InstallJobItem).where(InstallJobItem.state.in_(st.IN_FLIGHT))
                    .values(state=st.SUCCEEDED, exit_code=0, message="simulated install",
                            finished_at=now)).rowcount  # type: ignore[attr-defined]


# --- the steps alone, then the cycle -----------------------------------------------------------


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def steps_alone() -> dict[str, float]:
    """Each step of the cycle as it runs on its own, in the cycle's order."""
    from flows.install import install as install_flow
    from flows.scan import scan as scan_flow
    from models.db import session_scope
    from patchflow.cycle import report
    from patchflow.cycle.plan import build_plan, get_policy
    from patchflow.cycle.verify import flag_still_missing, inventory_status
    from patchflow.install.jobs import create_job
    from patchflow.install.settings import InstallSettings

    times: dict[str, float] = {}
    _out, times["scan"] = _timed(scan_flow, {"policy": "Bench"}, trigger="manual")
    start = time.perf_counter()
    with session_scope() as session:
        plan = build_plan(session, get_policy(session, "Bench"))
        rings = plan.rings
    times["approve"] = time.perf_counter() - start
    jobs = []
    for ring in rings:
        start = time.perf_counter()
        with session_scope() as session:
            job_id = create_job(session, ring["pairs"], "bench", trigger="cycle",
                                settings=InstallSettings.from_config()).id
        installed = install_flow(job_id)
        times[f"install:{ring['name']}"] = time.perf_counter() - start
        jobs.append((ring["name"], job_id, installed))
    start = time.perf_counter()
    hosts: set[str] = set()
    for _name, job_id, _inst in jobs:
        with session_scope() as session:
            touched, _stale = inventory_status(session, job_id)
        hosts.update(touched)
    scan_flow({"endpoints": sorted(hosts)}, trigger="manual")
    for _name, job_id, _inst in jobs:
        with session_scope() as session:
            flag_still_missing(session, job_id, sorted(hosts))
    times["verify"] = time.perf_counter() - start
    start = time.perf_counter()
    report.run_summary("Bench", False, plan.rows,
                       [{"ring": n, "install": i, "note": None, "flagged": []}
                        for n, _j, i in jobs])
    times["report"] = time.perf_counter() - start
    return times


def task_runs(flow_run_id: str) -> dict[str, int]:
    """Task runs of the cycle's flow run itself, and with its sub-flow runs."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterParentFlowRunId,
    )

    parent = uuid.UUID(flow_run_id)
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])), limit=200)

        def count(ids: list[uuid.UUID]) -> int:
            return len(client.read_task_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=ids)), limit=200))

        own = count([parent])
        everything = count([parent, *(c.id for c in children)])
    # Sub-flow calls are task-run placeholders in the parent too; count them apart.
    return {"own": own, "with_subflows": everything, "subflow_runs": len(children)}


def run_one(endpoints: int, programs: int, database_url: str | None) -> dict[str, Any]:
    """One fleet size, in this (child) process; returns the figures."""
    with tempfile.TemporaryDirectory(prefix="patchflow-bench-cycle-") as tmp:
        work = Path(tmp)
        home = work / "home"
        os.environ["PATCHFLOW_HOME"] = str(home)
        url = database_url or f"sqlite:///{home / 'patchflow.db'}"
        os.environ["PATCHFLOW_DATABASE_URL"] = url
        os.environ["PREFECT_HOME"] = str(work / "prefect")
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        os.environ["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
        home.mkdir(parents=True)
        from patchflow.ops import prefect_env

        prefect_env.configure()
        from prefect import flow
        from prefect.server.api.server import SubprocessASGIServer

        from patchflow import config

        @flow(name="bench-warm-up")
        def warm_up() -> None:
            return None

        out: dict[str, Any] = {"endpoints": endpoints}
        try:
            _none, out["prefect_start_s"] = _timed(warm_up)
            start = time.perf_counter()
            _setup(url, endpoints, programs)
            config.write_config({"install": {"poll_seconds": 0.2, "retry_delay_s": 0},
                                 "cycle": {"verify_wait_s": 0}})
            out["approved"] = _seed_policy(endpoints)
            out["setup_s"] = time.perf_counter() - start
            with SimulatedAgents() as agents:
                out["alone"] = steps_alone()
                from flows.cycle import cycle

                result, out["cycle_s"] = _timed(cycle, "Bench", started_by="bench")
            out["simulated_results"] = agents.done
            out["state"] = result["state"]
            out["steps"] = [(s["name"], s["state"]) for s in result["steps"]]
            out["items"] = sum(len(p["endpoints"]) for p in result["plan"])
            out["task_runs"] = task_runs(result["flow_run_id"])
        finally:
            for prefect_server in list(SubprocessASGIServer._instances.values()):
                prefect_server.stop()
        from models.db import dispose_all

        dispose_all()
        return out


# --- report -----------------------------------------------------------------------------------


def _print(one: dict[str, Any]) -> float:
    alone = one["alone"]
    total = sum(alone.values())
    overhead = one["cycle_s"] - total
    print(f"\n{one['endpoints']:,} endpoints, 3 rings: {one['items']:,} install items "
          f"({len(one['approved'])} approved patches); setup {one['setup_s']:.1f} s, "
          f"Prefect temporary server {one['prefect_start_s']:.1f} s (not counted)")
    print(f"  cycle: {one['state']} in {one['cycle_s']:.1f} s; steps "
          + ", ".join(f"{n} {s.lower()}" for n, s in one["steps"]))
    print("  steps alone: " + ", ".join(f"{k} {v:.1f} s" for k, v in alone.items())
          + f" = {total:.1f} s")
    print(f"  orchestration overhead (cycle - steps alone): {overhead:.1f} s  "
          f"[target < {TARGET_OVERHEAD_S:.0f} s: "
          f"{'met' if overhead < TARGET_OVERHEAD_S else 'NOT met'}]")
    runs = one["task_runs"]
    print(f"  task runs: {runs['own']} in the cycle flow run, {runs['with_subflows']} with its "
          f"{runs['subflow_runs']} sub-flow runs")
    return overhead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cycle", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=1_000,
                        help="the second fleet size, for the task-run comparison (0: none)")
    parser.add_argument("--programs", type=int, default=30,
                        help="programs per endpoint in the synthetic inventories")
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one is not None:  # the child process for one size
        figures = run_one(args.one, args.programs, args.database_url)
        Path(args.out).write_text(json.dumps(figures), encoding="utf-8")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="patchflow-bench-cycle-out-") as tmp:
        for size in [s for s in (args.small, args.endpoints) if s]:
            out = Path(tmp) / f"{size}.json"
            command = [sys.executable, "-m", "bench.cycle", "--one", str(size), "--out",
                       str(out), "--programs", str(args.programs)]
            if args.database_url:
                command += ["--database-url", args.database_url]
            print(f"running the cycle over {size:,} endpoints…", flush=True)
            if subprocess.call(command, cwd=ROOT) != 0 or not out.exists():
                print(f"bench.cycle: the run over {size:,} endpoints failed")
                return 1
            results.append(json.loads(out.read_text(encoding="utf-8")))
    overheads = [_print(r) for r in results]
    if len(results) == 2:
        own = {r["task_runs"]["own"] for r in results}
        print(f"\ncycle flow task runs: {results[0]['task_runs']['own']} at "
              f"{results[0]['endpoints']:,} endpoints, {results[1]['task_runs']['own']} at "
              f"{results[1]['endpoints']:,}: "
              + ("independent of the endpoint count" if len(own) == 1 else "they DIFFER"))
    ok = all(r["state"] == "Completed" for r in results) and overheads[-1] < TARGET_OVERHEAD_S
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
