"""Prefect tasks of the `patchflow-cycle` flow: one task per step over the whole policy, never
one per endpoint, so a cycle over 10,000 endpoints has as many task runs as one over ten.

Tasks that only read, or write idempotently (a step recorded again replaces itself, the install
job is created once per run), retry with backoff on transient database errors. Each step's
outcome is written to cycle_runs and published as a markdown and a table artifact.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select

from models import PatchServer
from models.base import utcnow
from models.db import session_scope
from models.enums import SyncStatus
from patchflow import config
from patchflow.cycle import report, runs
from patchflow.cycle.plan import build_plan, get_policy
from patchflow.cycle.verify import awaiting_inventory, flag_still_missing, touched
from patchflow.fleet.transactions import write_transaction
from patchflow.install.jobs import create_job
from patchflow.install.settings import InstallSettings


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a lost connection or a timed-out database, never a user error or a bug."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    try:
        state.result()
    except (OperationalError, InterfaceError, ConnectionError, TimeoutError):
        return True
    except Exception:
        return False
    return False


RETRY: dict[str, Any] = {"retries": 2, "retry_delay_seconds": [1, 5],
                         "retry_condition_fn": transient, "cache_policy": NO_CACHE}


def setting(key: str, default: float) -> float:
    return float(config.setting("cycle", key, default) or default)


@task(name="cycle-create-run", **RETRY)
def create_run(policy: str, dry_run: bool, trigger: str, who: str | None) -> int:
    """A run record for a flow started without one (a Quick run from the Prefect UI)."""
    return write_transaction(None, lambda s: runs.create(s, policy, dry_run, trigger, who).id)


@task(name="cycle-start", **RETRY)
def start_cycle(run_id: int, flow_run_id: str | None) -> dict[str, Any]:
    def work(session: Any) -> dict[str, Any]:
        run = runs.begin(session, run_id, flow_run_id)
        policy = get_policy(session, run.policy_name)
        server = session.get(PatchServer, policy.patch_server_id) \
            if policy.patch_server_id else None
        return {"run_id": run.id, "policy": policy.name, "dry_run": run.dry_run,
                "auto_restart": policy.auto_restart, "server": server.name if server else None}

    return write_transaction(None, work)


@task(name="cycle-check-sync", **RETRY)
def check_sync(server: str | None) -> dict[str, Any]:
    """Is the policy's patch server due for a sync (no successful sync within the setting)?"""
    if server is None:
        return {"due": False, "reason": "the policy has no patch server"}
    hours = setting("sync_max_age_hours", 24)
    with session_scope() as session:
        row = session.scalar(select(PatchServer).where(PatchServer.name == server))
        if row is None:
            return {"due": False, "reason": f"patch server {server} no longer exists"}
        last = row.sync_finished_at or row.sync_status_at
        if row.sync_status != SyncStatus.SUCCESSFUL or last is None:
            return {"due": True, "reason": f"last sync of {server}: {row.sync_status}"}
        age = (utcnow() - last).total_seconds() / 3600
    if age >= hours:
        return {"due": True, "reason": f"last successful sync {age:.1f} h ago (over {hours:g} h)"}
    return {"due": False, "reason": f"synced {age:.1f} h ago (within {hours:g} h)"}


@task(name="cycle-record-step", **RETRY)
def record_step(run_id: int, name: str, state: str, summary: str,
                columns: list[str] | None = None, rows: list[list[Any]] | None = None,
                details: dict[str, Any] | None = None) -> None:
    """The step's outcome in cycle_runs, and as artifacts next to the run."""
    write_transaction(None, lambda s: runs.add_step(s, run_id, name, state, summary, details))
    key = f"cycle-{int(run_id)}-{name}"
    create_markdown_artifact(
        key=key, markdown=report.markdown(f"Cycle {run_id}: {name} ({state})", summary,
                                          columns or [], rows or []),
        description=f"cycle {run_id} {name}: {summary}"[:500])
    if columns and rows:
        create_table_artifact(key=f"{key}-table",
                              table=[dict(zip(columns, [report._cell(v) for v in row],
                                              strict=True)) for row in rows[:1000]],
                              description=f"cycle {run_id} {name}")
    get_run_logger().info("cycle %d %s: %s: %s", run_id, name, state, summary)


@task(name="cycle-plan", **RETRY)
def plan_approvals(run_id: int) -> dict[str, Any]:
    """The approved set applied to what the scan found missing: the install plan."""
    def work(session: Any) -> dict[str, Any]:
        run = runs.get_run(session, run_id)
        plan = build_plan(session, get_policy(session, run.policy_name))
        runs.set_plan(session, run_id, plan.rows)
        return {"rows": plan.rows, "pairs": plan.pairs, "notes": plan.notes,
                "endpoints": plan.endpoints}

    return write_transaction(None, work)


@task(name="cycle-create-install-job", **RETRY)
def create_install_job(run_id: int, pairs: list[tuple[int, int]], auto_restart: bool) -> int:
    """One install job for the approved pairs, created once per run (a retry finds it)."""
    def work(session: Any) -> int:
        run = runs.get_run(session, run_id)
        if run.install_job_id is not None:
            return run.install_job_id
        job = create_job(session, pairs, f"cycle:{run.policy_name}"[:128],
                         allow_restart=auto_restart, trigger="cycle",
                         settings=InstallSettings.from_config())
        runs.set_job(session, run_id, job.id)
        return job.id

    return write_transaction(None, work)


@task(name="cycle-await-inventories", **RETRY)
def await_inventories(job_id: int) -> dict[str, Any]:
    """Wait (at most `[cycle] verify_wait_s`) for a fresh inventory from every endpoint with an
    applied install; returns those touched and those still without one."""
    deadline = time.monotonic() + setting("verify_wait_s", 300)
    poll = setting("verify_poll_s", 2)
    while True:
        with session_scope() as session:
            from models import Endpoint

            ids = list(touched(session, job_id))
            hosts = sorted(session.scalars(select(Endpoint.hostname)
                                           .where(Endpoint.id.in_(ids or [-1]))))
            stale = awaiting_inventory(session, job_id)
        if not stale or time.monotonic() >= deadline:
            return {"hosts": hosts, "stale": stale}
        time.sleep(poll)


@task(name="cycle-verify", cache_policy=NO_CACHE)
def verify(job_id: int, stale: list[str]) -> list[dict[str, Any]]:
    return write_transaction(None, lambda s: flag_still_missing(s, job_id, stale))


@task(name="cycle-finish", **RETRY)
def finish_cycle(run_id: int, state: str, message: str | None) -> dict[str, Any]:
    return write_transaction(None, lambda s: runs.to_dict(runs.finish(s, run_id, state,
                                                                      message)))
