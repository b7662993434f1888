"""The `patchflow-sync` flow: bring one patch server's catalog up to date from its upstream."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from deployments.orphans import record_process
from models.db import session_scope
from models.enums import SyncStatus
from patchflow import servers as server_svc
from tasks import sync as t
from tasks.replicate import prefetch_content, replicate
from tasks.sync_wsus import sync_wsus
from tasks.sync_wsusscn2 import sync_wsusscn2, uses_offline_catalog


def _summary(results: list[dict[str, Any]]) -> tuple[str, str]:
    stored = sum(r["stored"] for r in results)
    skipped = sum(r["skipped"] for r in results)
    failed = sum(r["failed"] for r in results)
    patches = sum(r["patches"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    text = f"{stored} documents stored ({patches} patches), {skipped} unchanged"
    if any(r["stopped"] for r in results):
        return SyncStatus.STOPPED, "stopped by request; " + text
    if failed:
        return SyncStatus.FAILED, f"{failed} documents failed ({errors[0]}); {text}"
    return SyncStatus.SUCCESSFUL, text


@flow(name="patchflow-sync", log_prints=True, on_running=[record_process])
def sync(server_name: str, prefetch: bool = False) -> dict[str, Any]:
    """Sync a patch server; returns {"status", "message"}. Never raises for source problems:
    the outcome lands in the server's sync status, which is what administrators look at.
    `prefetch` also downloads the content of every patch offered (else it comes on demand)."""
    logger = get_run_logger()
    server_id = t.begin_sync(server_name, flow_run.get_id())
    with session_scope() as session:
        server = server_svc.get_server(session, server_name)
        upstream, msrc_source = server.upstream, server.msrc_source
    if upstream == "microsoft":
        status, message = _sync_microsoft(server_id, msrc_source)
    elif upstream.startswith(("server:", "https://")):
        status, message = _sync_replica(server_id)
    elif upstream == "wsus":
        status, message = _sync_wsus(server_id)
    else:
        status = SyncStatus.FAILED
        message = f"upstream {upstream!r} is not supported by this version yet"
    if prefetch and status != SyncStatus.STOPPED:
        status, message = _prefetch(server_id, status, message)
    t.finish_sync(server_id, status, message)
    logger.info("sync of %s: %s: %s", server_name, status, message)
    return {"status": str(status), "message": message}


def _sync_microsoft(server_id: int, msrc_source: str | None) -> tuple[str, str]:
    """MSRC documents (online feed or a mirror folder) or the offline wsusscn2 catalog, then
    the third-party packages."""
    logger = get_run_logger()
    results: list[dict[str, Any]] = []
    error = None
    if uses_offline_catalog(msrc_source):
        results.append(sync_wsusscn2(server_id))
    else:
        plan = t.plan_msrc(server_id)
        refs, error = plan["refs"], plan["error"]
        logger.info("%d MSRC documents to check", len(refs))
        for start in range(0, len(refs), t.MSRC_BATCH):
            batch = refs[start : start + t.MSRC_BATCH]
            results.append(t.sync_msrc_batch(server_id, batch, start, len(refs)))
            if results[-1]["stopped"]:
                break
    if not any(r["stopped"] for r in results):
        results.append(t.sync_winget_batch(server_id))
    status, message = _summary(results)
    if error and status != SyncStatus.STOPPED:
        # Third-party packages may still have synced; the MSRC failure is the headline.
        status, message = SyncStatus.FAILED, f"{error}; {message}"
    return status, message


def _sync_replica(server_id: int) -> tuple[str, str]:
    """Another patchflow patch server; third-party packages come from it too."""
    outcome = replicate(server_id)
    at = f"at revision {outcome['revision']}"
    if outcome["latest"] is not None:
        at += f" of {outcome['latest']}"
    text = f"{outcome['pages']} pages applied ({outcome['patches']} patches), {at}"
    if outcome["stopped"]:
        return SyncStatus.STOPPED, "stopped by request; " + text
    if outcome["error"]:
        return SyncStatus.FAILED, f"{outcome['error']}; {text}"
    return SyncStatus.SUCCESSFUL, text


def _prefetch(server_id: int, status: str, message: str) -> tuple[str, str]:
    outcome = prefetch_content(server_id)
    message += f"; {outcome['fetched']} content files prefetched"
    if outcome["stopped"]:
        return SyncStatus.STOPPED, "stopped by request; " + message
    if outcome["failed"]:
        message += f", {outcome['failed']} failed ({outcome['errors'][0]})"
        return SyncStatus.FAILED, message
    return status, message


def _sync_wsus(server_id: int) -> tuple[str, str]:
    """The organisation's WSUS server, then the third-party packages."""
    results = [sync_wsus(server_id)]
    if not results[0]["stopped"]:
        results.append(t.sync_winget_batch(server_id))
    return _summary(results)
