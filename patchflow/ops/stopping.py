"""Stopping a running sync or scan, whichever door asks (CLI, console): the stop flag the flow
checks between documents or batches, and, for a run a deployment started elsewhere, Prefect's
cancel as an extra push. One place, so the doors cannot drift apart."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import Scan
from models.enums import SyncStatus
from patchflow.catalog import servers as server_svc
from patchflow.errors import UserError

log = logging.getLogger(__name__)


def stop_sync(session: Session, name: str, starting: bool = False) -> str | None:
    """Ask the running sync of patch server `name` to stop at its next document; returns its
    flow run id (to cancel once this is committed), or None. `starting`: this process started
    a sync of `name` that has not marked the server Running yet, and would clear the flag."""
    server = server_svc.get_server(session, name)
    if server.sync_status != SyncStatus.RUNNING:
        if starting:
            raise UserError(f"the sync of {name} is still starting: stop it in a moment")
        raise UserError(f"patch server {name!r} is not syncing")
    server.sync_stop_requested = True
    session.flush()
    return server.sync_flow_run_id


def stop_scans(session: Session) -> tuple[int, list[str]]:
    """Ask every running scan to stop before its next batch: how many, and their flow runs."""
    running = list(session.scalars(select(Scan).where(Scan.status == "running")))
    if not running:
        raise UserError("no scan is running")
    session.execute(update(Scan).where(Scan.status == "running").values(stop_requested=True))
    session.flush()
    return len(running), [s.flow_run_id for s in running if s.flow_run_id]


def cancel_elsewhere(flow_run_ids: Iterable[str | None]) -> None:
    """Cancel through the Prefect API the flow runs a deployment started, when there is one to
    talk to; a run in this process sees the flag. The flag is already set, so a failed cancel
    is a warning, not an error."""
    ids = [run_id for run_id in flow_run_ids if run_id]
    if not ids or not os.environ.get("PREFECT_API_URL"):
        return
    from patchflow.ops.flowruns import cancel_flow_run

    for run_id in ids:
        try:
            cancel_flow_run(run_id)
        except Exception as exc:
            log.warning("could not cancel flow run %s: %s", run_id, exc)
