"""The `install` flow: drive one install job to its end.

    start → resolve installers → ensure content → dispatch → await results → finish → publish

Seven task runs whatever the number of endpoints. The job's state lives in the database, so
running the flow again for a job whose previous run died (server restart) resumes it: items
with the agents keep their deadlines, pending ones are dispatched, finished ones stay finished.

`auto_install` is what a scheduled scan calls for its policies with auto-install.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from patchflow.install.settings import InstallSettings
from tasks import install as t


@flow(name="install", log_prints=False)
def install(job_id: int, poll_seconds: float | None = None,
            retry_delay_s: float | None = None) -> dict[str, Any]:
    """Run (or resume) install job `job_id`; returns its summary. Never raises for what
    happens on endpoints: failures are the items' states and messages."""
    logger = get_run_logger()
    settings = InstallSettings.from_config()
    poll = settings.poll_seconds if poll_seconds is None else poll_seconds
    delay = settings.retry_delay_s if retry_delay_s is None else retry_delay_s
    started = t.start_job(job_id, flow_run.get_id())
    logger.info("install job %d (%s): %d items, %d open", job_id, started["status"],
                started["items"], started["open"])
    if started["open"]:
        t.resolve_installers(job_id)
        errors = t.ensure_content(job_id)
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
