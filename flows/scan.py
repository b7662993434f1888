"""The `scan` flow: evaluate the catalog against stored inventories, in batches."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from patchflow.scanning import BATCH_SIZE, batches
from tasks import scan as t


@flow(name="scan", log_prints=True)
def scan(
    selection: dict[str, Any] | None = None,
    trigger: str = "manual",
    batch_size: int = BATCH_SIZE,
) -> dict[str, Any]:
    """selection: {"endpoints": [...]} | {"group": G} | {"policy": P} | {"all": True}."""
    logger = get_run_logger()
    started = t.start_scan(selection or {"all": True}, trigger, flow_run.get_id())
    scan_id, ids = started["scan_id"], started["endpoint_ids"]
    logger.info("scan %d: %d endpoints in batches of %d", scan_id, len(ids), batch_size)
    results: list[dict[str, Any]] = []
    if ids:
        catalog = t.load_catalog_task()
        for n, batch in enumerate(batches(ids, batch_size), 1):
            results.append(t.scan_batch(scan_id, batch, catalog))
            logger.info("batch %d: %d endpoints, %d missing pairs", n, len(batch),
                        results[-1]["pairs"])
            if results[-1]["stopped"]:
                break
    summary = t.finish_scan(scan_id, results)
    logger.info("scan %d %s: %s", scan_id, summary["status"], summary)
    return summary
