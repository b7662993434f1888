"""Scan tasks: the catalog is loaded once per run, endpoints are scanned in batches (one task
run per batch, never per endpoint), each batch written in its own transaction."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from sqlalchemy import select

from models import Scan
from models.db import session_scope
from models.enums import ScanState
from patchflow.fleet.transactions import queued_write, read_committed
from patchflow.scanning import basis_store
from patchflow.scanning import service as scanning
from patchflow.scanning.scan_store import BatchCounts, Catalog, load_catalog, mark
from tasks.retry import io_retries


@task(name="start-scan", **io_retries(
    "Select the endpoints and create the scan record (database)."))
def start_scan(selection: dict[str, Any], trigger: str, flow_run_id: str | None
               ) -> dict[str, Any]:
    sel = scanning.Selection(**selection)
    with session_scope() as session:
        ids = scanning.select_endpoints(session, sel)
        scan_id = scanning.create_scan(session, trigger, sel.describe(), len(ids), flow_run_id)
    return {"scan_id": scan_id, "endpoint_ids": ids}


@task(name="load-catalog", **io_retries(
    "Load the patch catalog once per scan (database)."))
def load_catalog_task() -> Catalog:
    with session_scope() as session:
        return load_catalog(session)


def _stop_requested(scan_id: int) -> bool:
    with session_scope() as session:
        return bool(session.scalar(select(Scan.stop_requested).where(Scan.id == scan_id)))


@task(name="scan-batch", **io_retries(
    "Scan one batch of endpoints and store its results in one transaction (database); a "
    "stop request seen before it starts leaves the batch untouched."))
def scan_batch(scan_id: int, endpoint_ids: list[int], catalog: Catalog) -> dict[str, Any]:
    """Scan one batch; a stop request leaves the batch (and its old results) untouched."""
    if _stop_requested(scan_id):
        return {"stopped": True, **asdict(BatchCounts())}
    # Other batches of this flow may be writing in other threads: both marks queue with them.
    with queued_write() as session:
        mark(session, endpoint_ids, ScanState.SCANNING, None)
    try:
        counts = scanning.scan_batch(scan_id, endpoint_ids, catalog)
    except Exception as exc:
        with queued_write() as session:
            mark(session, endpoint_ids, ScanState.SCAN_FAILED, str(exc).splitlines()[0][:500])
        raise
    return {"stopped": False, **asdict(counts)}


@task(name="plan-scan", **io_retries(
    "Incremental scan: keep the results of the endpoints nothing changed for (inventory, "
    "patch server, the catalog rows of their products) and return the others (database)."))
def plan_scan(scan_id: int, endpoint_ids: list[int], catalog: Catalog) -> dict[str, Any]:
    with session_scope() as session:
        read_committed(session)  # it rewrites the kept endpoints' rows beside running rescans
        plan = basis_store.plan(session, endpoint_ids, catalog)
        kept = basis_store.keep_results(
            session, scan_id, basis_store.catalog_state_id(session, catalog), plan)
    return {"rescan": plan.rescan, "kept": asdict(kept)}


@task(name="finish-scan", **io_retries(
    "Add up the batches and close the scan record (database)."))
def finish_scan(scan_id: int, results: list[dict[str, Any]],
                kept: dict[str, int] | None = None) -> dict[str, Any]:
    """kept: plan-scan's counts of the endpoints an incremental scan kept (they count as
    scanned, and as `unchanged`)."""
    kept = kept or {}
    total = BatchCounts(**kept)
    for r in results:
        total.add(BatchCounts(**{k: v for k, v in r.items() if k != "stopped"}))
    stopped = any(r["stopped"] for r in results)
    status = "stopped" if stopped else "completed"
    unchanged = kept.get("scanned", 0)
    with session_scope() as session:
        scanning.finish_scan(session, scan_id, total, status,
                             "stopped by request" if stopped else None, unchanged)
    return {"scan_id": scan_id, "status": status, "unchanged": unchanged, **asdict(total)}
