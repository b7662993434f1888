"""cycle_runs: one row per cycle run, holding its steps and plan so `cycle list/show` and the
console read the run without the Prefect API.

One cycle per policy runs at a time: `start` refuses while another run of the policy is
Running, unless that run has not moved for STALE_AFTER (its process died with the machine).
Each step is written when it ends, so a run that dies shows how far it got. A run waiting at
a manual gate is Paused: it still holds the policy (a paused run is not stale before its gate's
timeout has passed too).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from models import CycleRun
from models.base import utcnow
from patchflow import config
from patchflow.cycle.plan import get_policy
from patchflow.errors import NotFoundError, UserError
from patchflow.ops import audit

PENDING, RUNNING, COMPLETED, FAILED = "Pending", "Running", "Completed", "Failed"
PAUSED = "Paused"  # waiting at a manual gate for `patchflow cycle resume`
STEP_COMPLETED, STEP_SKIPPED, STEP_FAILED = "Completed", "Skipped", "Failed"
STEP_WAITING = "Waiting"
STALE_AFTER = dt.timedelta(hours=24)
GOING = (PENDING, RUNNING, PAUSED)
# `[cycle] gate_timeout_hours`: how long a manual gate waits; (default, lowest, highest).
GATE_TIMEOUT_HOURS = (72, 0.01, 720)


def gate_timeout_hours() -> float:
    return float(config.number("cycle", "gate_timeout_hours", *GATE_TIMEOUT_HOURS))


def busy(session: Session, policy_id: int, except_run: int | None = None) -> CycleRun | None:
    """The policy's run that is still going (Pending, Running or Paused and not stale)."""
    now = utcnow()
    paused_for = STALE_AFTER + dt.timedelta(hours=gate_timeout_hours())
    query = select(CycleRun).where(CycleRun.policy_id == policy_id, or_(
        CycleRun.state.in_([PENDING, RUNNING]) & (CycleRun.started_at >= now - STALE_AFTER),
        (CycleRun.state == PAUSED)
        & (CycleRun.started_at >= now - paused_for)))
    if except_run is not None:
        query = query.where(CycleRun.id != except_run)
    return session.scalars(query.order_by(CycleRun.id).limit(1)).first()


def create(session: Session, policy_name: str, dry_run: bool, trigger: str,
           started_by: str | None) -> CycleRun:
    """A Pending run, refused while another run of the policy is going."""
    policy = get_policy(session, policy_name)
    running = busy(session, policy.id)
    if running is not None:
        raise UserError(f"cycle run {running.id} of policy {policy.name} is still "
                        f"{running.state.lower()} (`patchflow cycle show {running.id}`)")
    run = CycleRun(policy_id=policy.id, policy_name=policy.name, state=PENDING,
                   trigger=trigger[:16], dry_run=dry_run, started_by=(started_by or "")[:128],
                   started_at=utcnow(), steps="[]", plan="[]")
    session.add(run)
    session.flush()
    return run


def get_run(session: Session, run_id: int | str) -> CycleRun:
    text = str(run_id).strip()
    run = session.get(CycleRun, int(text)) if text.isascii() and text.isdigit() and \
        len(text) < 12 else session.scalar(select(CycleRun).where(CycleRun.flow_run_id == text))
    if run is None:
        raise NotFoundError(f"no cycle run {run_id!r} (`patchflow cycle list`)")
    return run


def begin(session: Session, run_id: int, flow_run_id: str | None) -> CycleRun:
    run = get_run(session, run_id)
    if run.state not in GOING:
        raise UserError(f"cycle run {run.id} is already {run.state.lower()}")
    if run.policy_id is not None and busy(session, run.policy_id, except_run=run.id):
        raise UserError(f"another cycle of policy {run.policy_name} is running")
    run.state, run.flow_run_id = RUNNING, flow_run_id
    session.flush()
    return run


def add_step(session: Session, run_id: int, name: str, state: str, summary: str,
             details: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Record a step's outcome (a step recorded again replaces its earlier entry)."""
    run = get_run(session, run_id)
    steps = [s for s in json.loads(run.steps or "[]") if s["name"] != name]
    entry: dict[str, Any] = {"name": name, "state": state, "summary": summary,
                             "at": utcnow().isoformat(timespec="seconds")}
    if details:
        entry["details"] = details
    steps.append(entry)
    run.steps = json.dumps(steps)
    session.flush()
    return steps


def set_plan(session: Session, run_id: int, rows: list[dict[str, Any]]) -> None:
    session.execute(update(CycleRun).where(CycleRun.id == run_id).values(plan=json.dumps(rows)))


def set_job(session: Session, run_id: int, job_id: int) -> None:
    session.execute(update(CycleRun).where(CycleRun.id == run_id)
                    .values(install_job_id=job_id))


def set_state(session: Session, run_id: int, state: str) -> None:
    session.execute(update(CycleRun).where(CycleRun.id == run_id).values(state=state))


def finish(session: Session, run_id: int, state: str, message: str | None) -> CycleRun:
    run = get_run(session, run_id)
    run.state, run.message, run.finished_at = state, (message or None), utcnow()
    session.flush()
    return run


def to_dict(run: CycleRun, full: bool = True) -> dict[str, Any]:
    steps = json.loads(run.steps or "[]")
    out: dict[str, Any] = {
        "run": run.id, "policy": run.policy_name, "flow_run_id": run.flow_run_id,
        "state": run.state, "trigger": run.trigger, "dry_run": run.dry_run,
        "started_by": run.started_by, "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "install_job_id": run.install_job_id, "message": run.message,
        "steps": [{k: s[k] for k in ("name", "state", "summary")} for s in steps],
    }
    if full:
        out["steps"] = steps
        out["plan"] = json.loads(run.plan or "[]")
    return out


def list_runs(session: Session, policy: str | None = None,
              limit: int = 50) -> list[dict[str, Any]]:
    query = select(CycleRun).order_by(CycleRun.id.desc()).limit(limit)
    if policy:
        query = query.where(CycleRun.policy_id == get_policy(session, policy).id)
    return [to_dict(r, full=False) for r in session.scalars(query)]


def request(session: Session, policy_name: str, dry_run: bool, who: str,
            source: str = "cli") -> CycleRun:
    """A manual run asked for by an administrator (`cycle run`, the console's Start run): the
    Pending record, and the audit line in the same transaction."""
    run = create(session, policy_name, dry_run, "manual", who)
    audit.record(session, who, "cycle.run", run.policy_name,
                 f"run {run.id}" + (" (dry run)" if dry_run else ""), source=source)
    return run


def settle(session: Session, run_id: int, error: str | None) -> CycleRun:
    """After the flow returned or raised: a run still marked going died before it could say
    so, and is Failed with the error (the flow's own record wins otherwise)."""
    record = get_run(session, run_id)
    if record.state in GOING:
        record = finish(session, run_id, FAILED, error or "the flow ended early")
    return record
