"""The `patchflow-sync` flow: bring one patch server's catalog up to date from its upstream.

begin (the server looked up by name once; which connectors sync it) → for each connector, in
registry order: its plan when it lists ahead, then its batches → prefetch (with --prefetch) →
finish. The flow knows no upstream kind: patchflow/upstreams/ says which connectors run and
how the server's upstream words the outcome.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from deployments.orphans import record_process
from models.enums import SyncStatus
from patchflow import upstreams
from patchflow.catalog import syncing
from tasks import sync as t


@flow(name="patchflow-sync", log_prints=True, on_running=[record_process])
def sync(server_name: str, prefetch: bool = False) -> dict[str, Any]:
    """Sync a patch server; returns {"status", "message"}. Never raises for source problems:
    the outcome lands in the server's sync status, which is what administrators look at.
    `prefetch` also downloads the content of every patch offered (else it comes on demand)."""
    logger = get_run_logger()
    begun = t.begin_sync(server_name, flow_run.get_id())
    server_id, kinds = begun["server_id"], begun["kinds"]
    if kinds:
        status, message = _run_connectors(server_id, kinds)
    else:
        status, message = SyncStatus.FAILED, begun["error"]
    if prefetch and status != SyncStatus.STOPPED:
        status, message = syncing.with_prefetch(status, message, t.prefetch_content(server_id))
    t.finish_sync(server_id, status, message)
    logger.info("sync of %s: %s: %s", server_name, status, message)
    return {"status": str(status), "message": message}


def _run_connectors(server_id: int, kinds: list[str]) -> tuple[str, str]:
    """Each connector's batches in turn until one is stopped; the first connector (the
    server's upstream) words the outcome, and a plan that failed is its headline (the other
    connectors may still have synced)."""
    logger = get_run_logger()
    results: list[dict[str, Any]] = []
    error = None
    for kind in kinds:
        if any(r["stopped"] for r in results):
            break
        connector = upstreams.get(kind)
        batches: list[list[dict[str, Any]] | None] = [None]
        total = 1
        if connector.plans_ahead:
            plan = t.plan_task(kind)(server_id, kind)
            refs, error = plan["refs"], error or plan["error"]
            logger.info("%d %s documents to check", len(refs), connector.label)
            size, total = connector.batch_size, len(refs)
            batches = [refs[start : start + size] for start in range(0, total, size)]
        done = 0
        for batch in batches:
            results.append(t.batch_task(kind)(server_id, kind, batch, done, total))
            done += len(batch or [])
            if results[-1]["stopped"]:
                break
    status, message = upstreams.get(kinds[0]).summarise(results)
    if error and status != SyncStatus.STOPPED:
        status, message = SyncStatus.FAILED, f"{error}; {message}"
    return status, message
