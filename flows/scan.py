"""The `scan` flow: evaluate the catalog against stored inventories, in batches."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from deployments.orphans import record_process
from flows import task_runners
from patchflow.scanning import BATCH_SIZE, batches
from tasks import scan as t


@flow(name="patchflow-scan", log_prints=True, on_running=[record_process])
def scan(
    selection: dict[str, Any] | None = None,
    trigger: str = "manual",
    batch_size: int = BATCH_SIZE,
    task_runner: str | None = None,
) -> dict[str, Any]:
    """selection: {"endpoints": [...]} | {"group": G} | {"policy": P} | {"all": True}.
    task_runner: default | dask | tcp://scheduler:8786 (None: `[prefect] task_runner`)."""
    logger = get_run_logger()
    started = t.start_scan(selection or {"all": True}, trigger, flow_run.get_id())
    scan_id, ids = started["scan_id"], started["endpoint_ids"]
    logger.info("scan %d: %d endpoints in batches of %d", scan_id, len(ids), batch_size)
    results: list[dict[str, Any]] = []
    if ids:
        catalog = t.load_catalog_task()
        if task_runners.distributed(task_runner):  # all batches at once, on Dask
            results = task_runners.run_batches(task_runner, t.scan_batch, [
                {"scan_id": scan_id, "endpoint_ids": b, "catalog": catalog}
                for b in batches(ids, batch_size)])
            logger.info("%d batches ran on Dask", len(results))
        else:
            for n, batch in enumerate(batches(ids, batch_size), 1):
                results.append(t.scan_batch(scan_id, batch, catalog))
                logger.info("batch %d: %d endpoints, %d missing pairs", n, len(batch),
                            results[-1]["pairs"])
                if results[-1]["stopped"]:
                    break
    summary = t.finish_scan(scan_id, results)
    logger.info("scan %d %s: %s", scan_id, summary["status"], summary)
    if trigger == "scheduled" and summary["status"] == "completed":
        from flows.install import auto_install  # policies with auto-install (issue 5)

        summary["install_jobs"] = auto_install(ids)
    return summary
