"""Prefect tasks of the `patchflow-cycle` flow: one task per step over the whole policy, never
one per endpoint, so a cycle over 10,000 endpoints has as many task runs as one over ten.

Tasks that only read, or write idempotently (a step recorded again replaces itself), retry on
transient errors only (tasks/retry.py, said in each task's description in the Prefect UI).
Creating a ring's install job and flagging verified items are not retried: a retry must never
create a second job. Each step's outcome is written to cycle_runs and published as a markdown
and a table artifact.
"""

from __future__ import annotations

import re
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
from patchflow.cycle import notify, report, runs
from patchflow.cycle.plan import build_plan, get_policy
from patchflow.cycle.verify import flag_still_missing, inventory_status
from patchflow.errors import UserError
from patchflow.fleet.transactions import write_transaction
from patchflow.install.jobs import create_job
from patchflow.install.settings import InstallSettings
from patchflow.reporting import mail
from tasks.retry import io_retries

# `[cycle]` settings: key → (default, lowest, highest).
SETTINGS = {"sync_max_age_hours": (24, 0, 24 * 366), "verify_wait_s": (300, 0, 86400),
            "verify_poll_s": (2, 0.05, 600), "gate_timeout_hours": runs.GATE_TIMEOUT_HOURS,
            "gate_poll_s": (5, 1, 600)}


def setting(key: str) -> float:
    return float(config.number("cycle", key, *SETTINGS[key]))


@task(name="cycle-create-run", **io_retries(
    "A run record for a cycle started from the Prefect UI."))
def create_run(policy: str, dry_run: bool, trigger: str, who: str | None) -> int:
    """A run record for a flow started without one (a Quick run from the Prefect UI)."""
    return write_transaction(None, lambda s: runs.create(s, policy, dry_run, trigger, who).id)


@task(name="cycle-start", **io_retries(
    "Marks the cycle run running (one per policy at a time)."))
def start_cycle(run_id: int, flow_run_id: str | None) -> dict[str, Any]:
    def work(session: Any) -> dict[str, Any]:
        run = runs.begin(session, run_id, flow_run_id)
        policy = get_policy(session, run.policy_name)
        server = session.get(PatchServer, policy.patch_server_id) \
            if policy.patch_server_id else None
        return {"run_id": run.id, "policy": policy.name, "dry_run": run.dry_run,
                "auto_restart": policy.auto_restart, "auto_install": policy.auto_install,
                "server": server.name if server else None}

    return write_transaction(None, work)


@task(name="cycle-check-sync", **io_retries(
    "Whether the policy's patch server is due for a sync."))
def check_sync(server: str | None) -> dict[str, Any]:
    """Is the policy's patch server due for a sync (no successful sync within the setting)?"""
    if server is None:
        return {"due": False, "reason": "the policy has no patch server"}
    hours = setting("sync_max_age_hours")
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


@task(name="cycle-record-step", **io_retries(
    "Records a step's outcome and publishes its artifacts."))
def record_step(run_id: int, name: str, state: str, summary: str,
                columns: list[str] | None = None, rows: list[list[Any]] | None = None,
                details: dict[str, Any] | None = None) -> None:
    """The step's outcome in cycle_runs, and as artifacts next to the run."""
    write_transaction(None, lambda s: runs.add_step(s, run_id, name, state, summary, details))
    # Prefect artifact keys: lowercase letters, digits and dashes only ("install:Pilot_1").
    key = f"cycle-{int(run_id)}-" + (re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
                                     or "step")
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


@task(name="cycle-plan", **io_retries(
    "The approved set applied to the missing pairs: the install plan."))
def plan_approvals(run_id: int) -> dict[str, Any]:
    """The approved set applied to what the scan found missing: the install plan."""
    def work(session: Any) -> dict[str, Any]:
        run = runs.get_run(session, run_id)
        plan = build_plan(session, get_policy(session, run.policy_name))
        runs.set_plan(session, run_id, plan.rows)
        return {"rows": plan.rows, "pairs": plan.pairs, "notes": plan.notes,
                "endpoints": plan.endpoints, "rings": plan.rings}

    return write_transaction(None, work)


@task(name="cycle-create-install-job", cache_policy=NO_CACHE)
def create_install_job(run_id: int, ring: str, pairs: list[tuple[int, int]],
                       auto_restart: bool) -> int:
    """One install job for a ring's approved pairs (not retried: a retry could create two)."""
    def work(session: Any) -> int:
        run = runs.get_run(session, run_id)
        job = create_job(session, pairs, f"cycle:{run.policy_name}"[:128],
                         allow_restart=auto_restart, trigger="cycle",
                         settings=InstallSettings.from_config())
        if run.install_job_id is None:  # the first ring's job: `jobs show` from the run
            runs.set_job(session, run_id, job.id)
        return job.id

    return write_transaction(None, work)


@task(name="cycle-ring-delay", cache_policy=NO_CACHE)
def ring_delay(ring: str, minutes: int) -> None:
    """The ring's delay after the ring before it passed its gate."""
    get_run_logger().info("ring %s starts in %d minute(s)", ring, minutes)
    time.sleep(max(0, minutes) * 60)


@task(name="cycle-await-inventories", **io_retries(
    "Waits for fresh inventories from the endpoints installed on."))
def await_inventories(job_id: int) -> dict[str, Any]:
    """Wait (at most `[cycle] verify_wait_s`) for a fresh inventory from every endpoint with an
    applied install; returns those touched and those still without one."""
    deadline = time.monotonic() + setting("verify_wait_s")
    poll = setting("verify_poll_s")
    while True:
        with session_scope() as session:
            hosts, stale = inventory_status(session, job_id)
        if not stale or time.monotonic() >= deadline:
            return {"hosts": hosts, "stale": stale}
        time.sleep(poll)


@task(name="cycle-verify", **io_retries(
    "Flags the items installed but still missing after the rescan (database)."))
def verify(job_id: int, stale: list[str]) -> list[dict[str, Any]]:
    return write_transaction(None, lambda s: flag_still_missing(s, job_id, stale))


@task(name="cycle-set-state", **io_retries(
    "Marks the cycle run paused at a manual gate, or running again."))
def set_run_state(run_id: int, state: str) -> None:
    write_transaction(None, lambda s: runs.set_state(s, run_id, state))


@task(name="cycle-finish", **io_retries(
    "Marks the cycle run finished."))
def finish_cycle(run_id: int, state: str, message: str | None) -> dict[str, Any]:
    return write_transaction(None, lambda s: runs.to_dict(runs.finish(s, run_id, state,
                                                                      message)))


@task(name="cycle-notify-gate", **io_retries(
    "Mails the notice that a manual gate waits (SMTP, database)."))
def notify_gate(run_id: int, policy: str, ring: str, why: str) -> str:
    """One line saying whether the notice went out; never raises for the mail (the gate
    waits either way)."""
    try:
        to = notify.recipients()
        if not to:
            return "no [cycle] email recipients: no notice sent"
        with session_scope() as session:
            settings = mail.load_settings(session)
        if settings is None:
            return "SMTP is not configured (`patchflow mail set`): no notice sent"
        subject, text, html = notify.gate_notice(policy, run_id, ring, why)
        mail.send_message(settings, mail.build_message(settings.sender, to, subject, html, text))
    except UserError as exc:
        get_run_logger().warning("gate notice not sent: %s", exc)
        return f"notice not sent: {exc}"
    return f"notice mailed to {', '.join(to)}"
