"""The `sync` flow: bring one patch server's catalog up to date from its upstream."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from models.db import session_scope
from models.enums import SyncStatus
from patchflow import servers as server_svc
from tasks import sync as t


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


@flow(name="sync", log_prints=True)
def sync(server_name: str) -> dict[str, Any]:
    """Sync a patch server; returns {"status", "message"}. Never raises for source problems:
    the outcome lands in the server's sync status, which is what administrators look at."""
    logger = get_run_logger()
    server_id = t.begin_sync(server_name, flow_run.get_id())
    with session_scope() as session:
        upstream = server_svc.get_server(session, server_name).upstream
    results: list[dict[str, Any]] = []
    if upstream == "microsoft":
        plan = t.plan_msrc(server_id)
        refs = plan["refs"]
        logger.info("%d MSRC documents to check", len(refs))
        for start in range(0, len(refs), t.MSRC_BATCH):
            batch = refs[start : start + t.MSRC_BATCH]
            results.append(t.sync_msrc_batch(server_id, batch, start, len(refs)))
            if results[-1]["stopped"]:
                break
        if not any(r["stopped"] for r in results):
            results.append(t.sync_winget_batch(server_id))
        status, message = _summary(results)
        if plan["error"] and status != SyncStatus.STOPPED:
            # Third-party packages may still have synced; the MSRC failure is the headline.
            status, message = SyncStatus.FAILED, f"{plan['error']}; {message}"
    else:
        status = SyncStatus.FAILED
        message = f"upstream {upstream!r} is not supported by this version yet"
    t.finish_sync(server_id, status, message)
    logger.info("sync of %s: %s: %s", server_name, status, message)
    return {"status": str(status), "message": message}
