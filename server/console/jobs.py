"""Jobs: install jobs with their outcome and each item's state, refreshed live while a job
runs, Cancel, and Retry of the failed items.

Reads and the cancel go through patchflow.install (`patchflow jobs list|show|cancel`, the install
admin API). The detail page polls a JSON route that returns the rendered rows, so the browser
needs a few lines of script and the rows are rendered by one template either way.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from patchflow import install as inst
from patchflow.errors import UserError
from patchflow.install.outcome import plural
from patchflow.install.retry import retry_failed
from patchflow.ops import audit
from server.console.core import (
    ConsoleRoute,
    act,
    db,
    form_of,
    redirect,
    render,
    render_fragment,
    user_of,
)
from server.params import DbId

router = APIRouter(route_class=ConsoleRoute)
OPEN_STATUSES = ("pending", "running")


def running_jobs(session: Session) -> list[dict[str, Any]]:
    """Install jobs not finished yet (the dashboard's "running jobs")."""
    return [j for j in inst.list_jobs(session, limit=200) if j["status"] in OPEN_STATUSES]


@router.get("/jobs")
def jobs_page(request: Request) -> Response:
    with db(request) as session:
        jobs = inst.list_jobs(session, limit=100)
    return render(request, "jobs.html", title="Jobs", nav="jobs", jobs=jobs,
                  running=any(j["status"] in OPEN_STATUSES for j in jobs))


@router.get("/jobs.json")
def jobs_rows(request: Request) -> Response:
    with db(request) as session:
        jobs = inst.list_jobs(session, limit=100)
    return JSONResponse({"html": render_fragment("_job_rows.html", jobs=jobs),
                         "running": any(j["status"] in OPEN_STATUSES for j in jobs)})


def _job(session: Session, job_id: int) -> dict[str, Any]:
    job = inst.show_job(session, job_id, events=True)
    job["open"] = job["status"] in OPEN_STATUSES
    return job


@router.get("/jobs/{job_id}.json")
def job_rows(request: Request, job_id: DbId) -> Response:
    """The job's summary and rows, rendered; the page polls this while the job is open."""
    with db(request) as session:
        job = _job(session, job_id)
    html = render_fragment("_job_items.html", job=job, csrf=request.state.console.csrf_token)
    return JSONResponse({"html": html,
                         "running": job["open"], "status": job["status"],
                         "counts": job["counts"], "summary": job["summary"]})


@router.get("/jobs/{job_id}")
def job_page(request: Request, job_id: DbId) -> Response:
    with db(request) as session:
        job = _job(session, job_id)
    return render(request, "job.html", title=f"Install job {job_id}", nav="jobs", job=job)


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: DbId) -> Response:
    if form_of(request).get("confirmed") != "yes":
        return render(request, "confirm.html", title="Cancel install job", nav="jobs",
                      question=f"Cancel install job {job_id}? Items not finished yet are "
                      "cancelled; an install already running on an endpoint finishes there.",
                      action=f"/console/jobs/{job_id}/cancel", button="Cancel job",
                      cancel=f"/console/jobs/{job_id}")
    def work() -> str:
        with db(request) as session:
            result = inst.cancel_job(session, job_id, user_of(request))
            audit.record(session, user_of(request), "job.cancel", f"job {job_id}")
        return f"Cancelled install job {job_id} ({plural(result['cancelled_items'], 'item')})."

    return act(f"/console/jobs/{job_id}", work)


@router.post("/jobs/{job_id}/retry")
def retry(request: Request, job_id: DbId) -> Response:
    """The failed items of a finished job, still missing per the last scan, as a new job
    (patchflow.install.retry), launched like Start Install launches one."""
    from patchflow.install.launch import launch

    try:
        with db(request) as session:
            result = retry_failed(session, job_id, user_of(request))
            audit.record(session, user_of(request), "install.retry", f"job {result['job_id']}",
                         f"failed items of job {job_id}")
    except UserError as exc:
        return redirect(f"/console/jobs/{job_id}", str(exc), "error")
    launch(result["job_id"])
    dropped = (f"; {plural(result['dropped'], 'item')} no longer missing left out"
               if result["dropped"] else "")
    return redirect(f"/console/jobs/{result['job_id']}",
                    f"Started install job {result['job_id']} to retry "
                    f"{plural(result['items'], 'failed item')} of job {job_id}{dropped}.")
