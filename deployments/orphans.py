"""Flow runs whose process died, found and closed at the next start.

A flow run killed with its process (SIGKILL of `serve`, of a CLI `sync`, OOM) never reports a
final state: Prefect shows it Running forever, and patchflow's own records (a patch server's
sync status, a scan, an install job) stay "running". Every patchflow flow records the process
that runs it (`record_process`, an on_running hook: "host:pid" in the run's
infrastructure_pid, the format of Prefect's own process workers). At the next start of
`patchflow serve`, `reap()` sets each Running run whose process of this host is gone
(`childproc.ended`, also used for scans by patchflow.scanning.service) to Crashed through the
Prefect API, and closes the patchflow records of runs that ended that way: syncs and scans failed
with a message, install jobs annotated (their lease is void, so `serve` resumes them).
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from sqlalchemy import select, update

from deployments.hooks import _end_feeds, _end_scan, _end_sync
from models import FeedStatus, InstallJob, PatchServer, Scan
from models.db import session_scope
from models.enums import SyncStatus
from patchflow.ops import childproc

logger = logging.getLogger("patchflow.orphans")


def process_tag() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def record_process(flow: Any, flow_run: Any, state: Any) -> None:
    """on_running hook: which process runs this flow run, so a later start can tell whether
    it died. Never raises: a bookkeeping failure must not fail the run."""
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            client.update_flow_run(flow_run.id, infrastructure_pid=process_tag())
    except Exception as exc:
        logger.warning("could not record the process of flow run %s: %s", flow_run.id, exc)


def dead_process(infrastructure_pid: str | None) -> int | None:
    """The pid when `infrastructure_pid` names a process of this host that is gone."""
    host, _, pid = (infrastructure_pid or "").rpartition(":")
    return int(pid) if pid.isdigit() and childproc.ended(host, int(pid)) else None


def reap(limit: int = 200) -> dict[str, list[str]]:
    """Crash the Running flow runs whose process died and close the records they left open.
    Returns {"crashed": run ids, "closed": records closed}. Needs the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    crashed: list[str] = []
    with get_client(sync_client=True) as client:
        running = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.RUNNING]))), limit=limit)
        for run in running:
            pid = dead_process(run.infrastructure_pid)
            if pid is None:
                continue
            message = (f"the process running this flow (pid {pid} on {socket.gethostname()}) "
                       "died without reporting an end; marked crashed at the next start")
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            crashed.append(str(run.id))
            logger.warning("flow run %s (%s): %s", run.id, run.name, message)
        closed = _close_records(client)
    return {"crashed": crashed, "closed": closed}


def _close_records(client: Any) -> list[str]:
    """patchflow records still "running" whose flow run has ended (crashed just now, or
    earlier while nobody listened)."""
    from prefect.exceptions import ObjectNotFound

    with session_scope() as session:
        syncs = list(session.execute(select(PatchServer.name, PatchServer.sync_flow_run_id).where(
            PatchServer.sync_status == SyncStatus.RUNNING,
            PatchServer.sync_flow_run_id.is_not(None))).tuples())
        scans = list(session.execute(select(Scan.id, Scan.flow_run_id).where(
            Scan.status == "running", Scan.flow_run_id.is_not(None))).tuples())
        jobs = list(session.execute(select(InstallJob.id, InstallJob.flow_run_id).where(
            InstallJob.status == "running", InstallJob.flow_run_id.is_not(None))).tuples())
        feeds = list(session.execute(select(FeedStatus.name, FeedStatus.flow_run_id).where(
            FeedStatus.status == SyncStatus.RUNNING,
            FeedStatus.flow_run_id.is_not(None))).tuples())

    def ended(run_id: str) -> str | None:
        try:
            state = client.read_flow_run(run_id).state
        except (ObjectNotFound, ValueError):
            return None  # another Prefect server's run: not ours to judge
        return state.name if state is not None and state.is_final() else None

    closed: list[str] = []
    for name, run_id in syncs:
        if (how := ended(run_id)) is not None:
            _end_sync(run_id, SyncStatus.FAILED,
                      f"interrupted: the sync's process died (flow run {how}); start it again")
            closed.append(f"sync {name}")
    for scan_id, run_id in scans:
        if (how := ended(run_id)) is not None:
            _end_scan(run_id, "failed",
                      f"interrupted: the scan's process died (flow run {how}); start it again")
            closed.append(f"scan {scan_id}")
    for feed, run_id in feeds:
        if (how := ended(run_id)) is not None:
            _end_feeds(run_id, SyncStatus.STOPPED,
                       f"interrupted: the feeds sync's process died (flow run {how}); "
                       "what was stored before stays; run `patchflow feeds sync` again")
            closed.append(f"feed {feed}")
    for job_id, run_id in jobs:
        if (how := ended(run_id)) is not None:
            with session_scope() as session:
                session.execute(update(InstallJob).where(
                    InstallJob.id == job_id, InstallJob.flow_run_id == run_id,
                    InstallJob.status == "running").values(
                    message=f"interrupted: the flow driving this job died (flow run {how}); "
                            "`patchflow serve` or `patchflow jobs resume` continues it"))
            closed.append(f"install job {job_id}")
    for what in closed:
        logger.warning("%s was left running by a process that died: marked", what)
    return closed
