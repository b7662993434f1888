"""The `patchflow-scan` flow: evaluate the catalog against stored inventories, in batches."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.runtime import flow_run

from deployments.orphans import record_process
from flows import task_runners
from patchflow.scanning.service import BATCH_SIZE, batches
from tasks import scan as t


@flow(name="patchflow-scan", log_prints=True, on_running=[record_process],
      task_runner=task_runners.ConfiguredTaskRunner())
def scan(
    selection: dict[str, Any] | None = None,
    trigger: str = "manual",
    batch_size: int = BATCH_SIZE,
    task_runner: str | None = None,
    full: bool = False,
) -> dict[str, Any]:
    """selection: {"endpoints": [...]} | {"group": G} | {"policy": P} | {"all": True}.
    task_runner: default | dask | tcp://scheduler:8786 (None: `[prefect] task_runner`); the
    flow's task runner (flows/task_runners.py) reads it when the batches are mapped.
    full: evaluate every endpoint; by default endpoints whose inventory, patch server and
    products' catalog rows are unchanged since their last scan keep their results
    (patchflow.scanning.basis_store), which are exactly what a full scan would write."""
    logger = get_run_logger()
    task_runners.resolve(task_runner)  # a bad value fails before anything is written
    started = t.start_scan(selection or {"all": True}, trigger, flow_run.get_id())
    scan_id, ids = started["scan_id"], started["endpoint_ids"]
    logger.info("scan %d: %d endpoints in batches of %d", scan_id, len(ids), batch_size)
    results: list[dict[str, Any]] = []
    kept: dict[str, int] | None = None
    if ids:
        catalog = t.load_catalog_task()
        todo = ids
        if not full:
            planned = t.plan_scan(scan_id, ids, catalog)
            todo, kept = planned["rescan"], planned["kept"]
            logger.info("incremental: %d endpoints keep their results, %d to evaluate",
                        kept["scanned"], len(todo))
        parts = list(batches(todo, batch_size))
        futures = t.scan_batch.map(scan_id=unmapped(scan_id), endpoint_ids=parts,
                                   catalog=unmapped(catalog))
        for n, (batch, future) in enumerate(zip(parts, futures, strict=True), 1):
            results.append(future.result())
            logger.info("batch %d: %d endpoints, %d missing pairs%s", n, len(batch),
                        results[-1]["pairs"], " (stopped)" if results[-1]["stopped"] else "")
    summary = t.finish_scan(scan_id, results, kept)
    logger.info("scan %d %s: %s", scan_id, summary["status"], summary)
    if trigger == "scheduled" and summary["status"] == "completed":
        from flows.install import auto_install  # policies with auto-install

        summary["install_jobs"] = auto_install(ids)
    return summary
