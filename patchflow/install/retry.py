"""Retry a job's failed items: a new job with the same restart setting for every failed
(patch, endpoint) pair of the old one that is still missing per the last scan.

A new job rather than resetting the old items: the old job stays the record of what happened
(its items, exit codes, history), and the new one runs through the same flow, EULA checks and
per-item attempts as any other job. Pairs installed meanwhile (the endpoint was rescanned) are
dropped, not installed again.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import InstallJobItem
from patchflow.errors import UserError
from patchflow.install import states as st
from patchflow.install.jobs import _still_missing, create_job, get_job
from patchflow.install.settings import InstallSettings


def retry_failed(session: Session, job_id: int, who: str,
                 settings: InstallSettings | None = None) -> dict[str, Any]:
    """{"job_id": new job, "items": its size, "dropped": failed pairs no longer missing}, in
    the caller's transaction. Refuses a job still running or without failed items."""
    job = get_job(session, job_id)
    if job.status not in st.JOB_FINAL:
        raise UserError(f"install job {job.id} is still running: retry when it has finished")
    failed = session.execute(
        select(InstallJobItem.patch_id, InstallJobItem.endpoint_id)
        .where(InstallJobItem.job_id == job.id, InstallJobItem.state == st.FAILED)
    ).tuples().all()
    if not failed:
        raise UserError(f"install job {job.id} has no failed items to retry")
    still = _still_missing(session, failed)
    if not still:
        raise UserError(f"none of the failed items of install job {job.id} is missing any "
                        "more (per the last scans): nothing to retry")
    new = create_job(session, still, who, allow_restart=job.allow_restart, trigger="retry",
                     settings=settings)
    return {"job_id": new.id, "items": len(still), "dropped": len(failed) - len(still)}
