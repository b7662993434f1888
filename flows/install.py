"""The `patchflow-install` flow: drive one install job to its end.

    start → resolve installers → ensure content → dispatch → await results → finish → publish

Seven task runs whatever the number of endpoints. The job's state lives in the database, so
running the flow again for a job whose previous run died (server restart) resumes it: items
with the agents keep their deadlines, pending ones are dispatched, finished ones stay finished.
The flow holds the job's lease (patchflow/install/lease.py) while it runs: a second flow for a
job that a live flow drives ends at once with a message instead of driving it too.

`auto_install` is what a scheduled scan calls for its policies with auto-install.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from deployments.orphans import record_process
from patchflow.install import lease
from patchflow.install.settings import InstallSettings
from tasks import install as t


@flow(name="patchflow-install", log_prints=False, on_running=[record_process])
def install(job_id: int, poll_seconds: float | None = None,
            retry_delay_s: float | None = None) -> dict[str, Any]:
    """Run (or resume) install job `job_id`; returns its summary. Never raises for what
    happens on endpoints: failures are the items' states and messages."""
    logger = get_run_logger()
    settings = InstallSettings.from_config()
    poll = settings.poll_seconds if poll_seconds is None else poll_seconds
    delay = settings.retry_delay_s if retry_delay_s is None else retry_delay_s
    try:
        with lease.hold(job_id) as held:
            return _drive(job_id, poll, delay, held)
    except lease.JobLeased as exc:
        logger.warning("%s", exc)
        return {"job_id": job_id, "status": "busy", "summary": str(exc), "items": 0,
                "open": None}


def _drive(job_id: int, poll: float, delay: float, held: lease.Held) -> dict[str, Any]:
    logger = get_run_logger()
    started = t.start_job(job_id, flow_run.get_id())
    logger.info("install job %d (%s): %d items, %d open", job_id, started["status"],
                started["items"], started["open"])
    if started["open"]:
        t.resolve_installers(job_id)
        errors = t.ensure_content(job_id)
        if held.lost:  # another flow took the job over meanwhile: it dispatches, not us
            owner, until = lease.holder(job_id)
            raise lease.JobLeased(job_id, owner or "?", until)
        t.dispatch_items(job_id, errors)
        t.await_results(job_id, delay, poll)
    summary = t.finish_job(job_id)
    summary["artifact"] = t.publish_summary(job_id, summary)
    logger.info("install job %d %s: %s", job_id, summary["status"], summary["summary"])
    return summary


def auto_install(endpoint_ids: list[int]) -> list[dict[str, Any]]:
    """After a scheduled scan (inside the scan flow): a job per auto-install policy for what
    its non-roaming endpoints miss, each run to its end as a subflow."""
    jobs = t.create_auto_install_jobs(endpoint_ids)
    return [install(job_id) for job_id in jobs]
