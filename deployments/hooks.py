"""Flow-run state hooks that keep patchflow's own status columns true for deployment runs.

A deployment run that is cancelled is killed by the runner (or worker): the flow never reaches
its own `finish_sync`/`finish_scan`, so without these hooks the server would say "Running" and
the scan "running" forever. Prefect runs `on_cancellation` and `on_crashed` hooks in the process
that killed the run, and `on_running` in the run itself. Each hook is idempotent (it only
touches rows still marked running by *that* flow run) and never raises: a hook failure must not
keep Prefect from recording the final state.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from models import CycleRun, PatchServer, Policy, Scan
from models.base import utcnow
from models.db import session_scope
from models.enums import SyncStatus

logger = logging.getLogger("patchflow.deployments")


def _guarded(what: str, fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:  # a hook must never turn a Cancelled run into a hook error
        logger.warning("%s: could not update the patchflow database: %s", what,
                       str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def _end_sync(flow_run_id: str, status: str, message: str) -> None:
    with session_scope() as session:
        server = session.scalar(select(PatchServer).where(
            PatchServer.sync_flow_run_id == flow_run_id,
            PatchServer.sync_status == SyncStatus.RUNNING))
        if server is None:
            return
        now = utcnow()
        server.sync_status = status
        server.sync_status_at = now
        server.sync_finished_at = now
        server.sync_message = message
        server.sync_stop_requested = False


def _end_feeds(flow_run_id: str, status: str, message: str) -> None:
    """Every vulnerability feed this flow run left Running (patchflow.catalog.vulnfeeds.end_run)."""
    from patchflow.catalog import vulnfeeds

    with session_scope() as session:
        vulnfeeds.end_run(session, flow_run_id, status, message)


def _end_scan(flow_run_id: str, status: str, message: str) -> None:
    with session_scope() as session:
        scan = session.scalar(select(Scan).where(Scan.flow_run_id == flow_run_id,
                                                 Scan.status == "running"))
        if scan is None:
            return
        scan.status, scan.finished_at, scan.message = status, utcnow(), message
        # Imported here: the scan service brings the engine and pandas, which every CLI
        # command running a flow would otherwise load before its flow starts (0.45 s).
        from patchflow.scanning.service import restore_stuck_states

        restore_stuck_states(session, message)


def sync_cancelled(flow: Any, flow_run: Any, state: Any) -> None:
    _guarded("sync cancelled", _end_sync, str(flow_run.id), SyncStatus.STOPPED,
             "stopped by request (flow run cancelled)")


def sync_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    _guarded("sync crashed", _end_sync, str(flow_run.id), SyncStatus.FAILED,
             f"the sync process crashed: {getattr(state, 'message', None) or 'no reason given'}")


def feeds_cancelled(flow: Any, flow_run: Any, state: Any) -> None:
    _guarded("feeds sync cancelled", _end_feeds, str(flow_run.id), SyncStatus.STOPPED,
             "stopped by request (flow run cancelled)")


def feeds_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    """Interrupted (Ctrl+C, SIGTERM, the process killed): Stopped, like a stop request; what
    earlier documents stored stays (patchflow.catalog.vulnfeeds)."""
    _guarded("feeds sync interrupted", _end_feeds, str(flow_run.id), SyncStatus.STOPPED,
             f"interrupted: {getattr(state, 'message', None) or 'the sync process ended'}; "
             "what was stored before stays")


def scan_cancelled(flow: Any, flow_run: Any, state: Any) -> None:
    _guarded("scan cancelled", _end_scan, str(flow_run.id), "stopped",
             "stopped by request (flow run cancelled)")


def scan_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    _guarded("scan crashed", _end_scan, str(flow_run.id), "failed",
             f"the scan process crashed: {getattr(state, 'message', None) or 'no reason given'}")


def record_scheduled_scan(policy_name: str, at: Any) -> None:
    """Policy.last_scheduled_scan_at = when the scheduled run was due; "run if missed" compares
    the schedule's last due time against it."""
    with session_scope() as session:
        session.execute(update(Policy).where(Policy.name == policy_name)
                        .values(last_scheduled_scan_at=at or utcnow()))


def scheduled_scan_running(flow: Any, flow_run: Any, state: Any) -> None:
    params = getattr(flow_run, "parameters", None) or {}
    selection = params.get("selection") or {}
    if params.get("trigger") != "scheduled" or not selection.get("policy"):
        return
    due = getattr(flow_run, "expected_start_time", None)
    _guarded("scheduled scan", record_scheduled_scan, selection["policy"], due)


def scheduled_cycle_running(flow: Any, flow_run: Any, state: Any) -> None:
    """A scheduled cycle is the policy's scheduled run ("run if missed" reads the same column
    as for a scheduled scan); a Quick run of the deployment, with the same parameters, is not."""
    params = getattr(flow_run, "parameters", None) or {}
    scheduled = getattr(flow_run, "auto_scheduled", False) or "run-if-missed" in (
        getattr(flow_run, "tags", None) or [])
    if params.get("trigger") != "scheduled" or not params.get("policy") or not scheduled:
        return
    due = getattr(flow_run, "expected_start_time", None)
    _guarded("scheduled cycle", record_scheduled_scan, params["policy"], due)


def _end_cycle(flow_run_id: str, message: str) -> None:
    from patchflow.cycle import runs

    with session_scope() as session:
        run = session.scalar(select(CycleRun).where(CycleRun.flow_run_id == flow_run_id,
                                                    CycleRun.state.in_(runs.GOING)))
        if run is not None:
            runs.finish(session, run.id, runs.FAILED, message)


def cycle_cancelled(flow: Any, flow_run: Any, state: Any) -> None:
    _guarded("cycle cancelled", _end_cycle, str(flow_run.id),
             "stopped by request (flow run cancelled)")


def cycle_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    _guarded("cycle crashed", _end_cycle, str(flow_run.id),
             f"the cycle process crashed: {getattr(state, 'message', None) or 'no reason'}")
