"""Starting and stopping the long-running work the console offers: sync, scan, report, install.

The console starts the same Prefect flows the CLI runs (`patchflow sync`, `scan`, `report`),
in-process on a daemon thread, so a page returns at once and the flow reports to the same
Prefect API (under `patchflow serve`, the local Prefect server). Stops go through the stop
flags in the database, which the flows check between documents and batches, exactly like
`patchflow sync NAME --stop` and `patchflow scan --stop`; a run started elsewhere (by a
deployment) is also cancelled through Prefect, as the CLI does.

The registry below only knows this process's threads: it keeps a double click from starting
a second sync before the first has marked the patch server Running, and lets the Reports page
show a report that is still being built.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from models.base import utcnow
from models.enums import SyncStatus
from patchflow.catalog import servers as server_svc
from patchflow.errors import UserError
from patchflow.ops import stopping

log = logging.getLogger("patchflow.console")


@dataclass
class Run:
    key: str
    label: str
    started_by: str
    started_at: dt.datetime = field(default_factory=utcnow)
    finished_at: dt.datetime | None = None
    error: str | None = None
    result: Any = None
    thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.finished_at is None


_runs: dict[str, Run] = {}
_lock = threading.Lock()
KEEP_FINISHED = 50


def launch(key: str, label: str, started_by: str, target: Callable[[], Any]) -> Run:
    """Run `target` on a daemon thread under `key`; refuses while one with that key runs."""
    with _lock:
        current = _runs.get(key)
        if current is not None and current.running:
            raise UserError(f"{current.label} is already running (started by "
                            f"{current.started_by})")
        run = Run(key, label, started_by)

        def body() -> None:
            try:
                run.result = target()
            except Exception as exc:
                run.error = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]
                log.exception("%s failed", label)
            finally:
                run.finished_at = utcnow()

        run.thread = threading.Thread(target=body, name=f"console {key}", daemon=True)
        _runs[key] = run
        _prune()
        run.thread.start()
        return run


def _prune() -> None:
    finished = sorted((r for r in _runs.values() if not r.running),
                      key=lambda r: r.finished_at or r.started_at)
    for run in finished[:-KEEP_FINISHED] if len(finished) > KEEP_FINISHED else []:
        _runs.pop(run.key, None)


def runs(prefix: str) -> list[Run]:
    with _lock:
        return sorted((r for r in _runs.values() if r.key.startswith(prefix)),
                      key=lambda r: r.started_at, reverse=True)


def failure(key: str) -> str | None:
    """Why the last run under `key` failed to run at all (the flow could not start), if so.
    Failures inside a flow land in the patch server's or scan's own status instead."""
    with _lock:
        run = _runs.get(key)
        return run.error if run is not None and not run.running else None


def is_running(key: str) -> bool:
    with _lock:
        run = _runs.get(key)
        return run is not None and run.running


def quiet_prefect() -> None:
    # Prefect's INFO lines still reach its API (the UI); the server log stays readable.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")


# --- sync ------------------------------------------------------------------------------------


def start_sync(session: Session, name: str, who: str) -> Run:
    """`patchflow sync NAME` from the console."""
    server = server_svc.get_server(session, name)
    if server.sync_status == SyncStatus.RUNNING:
        raise UserError(f"patch server {name!r} is already syncing")
    quiet_prefect()
    from flows.sync import sync as sync_flow

    return launch(f"sync:{name}", f"the sync of {name}", who, lambda: sync_flow(name))


def stop_sync(session: Session, name: str) -> None:
    """`patchflow sync NAME --stop`: the flow stops at the next document."""
    flow_run_id = stopping.stop_sync(session, name, starting=is_running(f"sync:{name}"))
    if not is_running(f"sync:{name}"):
        stopping.cancel_elsewhere([flow_run_id])


def syncing(name: str) -> bool:
    """Started from this console and not finished (it may not say Running yet)."""
    return is_running(f"sync:{name}")


# --- scan ------------------------------------------------------------------------------------


def start_scan(session: Session, hostnames: list[str], who: str) -> Run:
    """`patchflow scan --endpoints H1,H2` from the console."""
    from patchflow.scanning.service import Selection, select_endpoints

    if not hostnames:
        raise UserError("select at least one endpoint to scan")
    selection = Selection(endpoints=hostnames)
    select_endpoints(session, selection)  # unknown or revoked endpoints fail here, at once
    quiet_prefect()
    from flows.scan import scan as scan_flow

    key = f"scan:{utcnow().timestamp()}:{','.join(hostnames)[:200]}"
    label = f"the scan of {selection.describe()}"
    return launch(key, label, who, lambda: scan_flow({"endpoints": hostnames}))


def stop_scans(session: Session) -> int:
    """`patchflow scan --stop`: every running scan stops before its next batch."""
    count, flow_runs = stopping.stop_scans(session)
    if not any(r.running for r in runs("scan:")):
        stopping.cancel_elsewhere(flow_runs)
    return count
