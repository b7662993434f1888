"""The dashboard: missing patches by severity, the scan overview, exploited patches and overdue
KEV pairs, last sync per patch server, and what is running now (syncs, scans, install jobs,
reports).

The figures are `patchflow dashboard --json`'s (patchflow.reporting.report_data.load_dashboard)
and the bar geometry is the report dashboard's (reports.dashboard.charts), so the console, the CLI
and the mailed dashboard page always show the same numbers.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import FeedStatus, Scan
from models.enums import SyncStatus
from patchflow.catalog import servers as server_svc
from patchflow.reporting.report_data import load_dashboard
from reports.dashboard import charts
from server.console import runs
from server.console.core import ConsoleRoute, db, render
from server.console.jobs import running_jobs

router = APIRouter(route_class=ConsoleRoute)


def scan_rows(session: Session, limit: int = 5) -> list[dict[str, Any]]:
    """Running scans first, then the latest finished ones."""
    scans = session.scalars(select(Scan).order_by((Scan.status == "running").desc(),
                                                  Scan.id.desc()).limit(limit))
    return [{"id": s.id, "trigger": s.trigger, "scope": s.scope, "status": s.status,
             "started_at": s.started_at, "finished_at": s.finished_at,
             "done": s.endpoints_done, "total": s.endpoints_total,
             "unchanged": s.endpoints_unchanged,
             "missing": s.endpoints_missing, "up_to_date": s.endpoints_up_to_date,
             "failed": s.endpoints_failed, "pairs": s.missing_pairs} for s in scans]


@router.get("/dashboard")
def dashboard(request: Request) -> Response:
    with db(request) as session:
        data = load_dashboard(session)
        servers = [server_svc.server_to_dict(session, s) for s in server_svc.list_servers(session)]
        scans = scan_rows(session)
        jobs = running_jobs(session)
        feeds = [{"name": f.name, "message": f.message} for f in session.scalars(
            select(FeedStatus).where(FeedStatus.status == SyncStatus.RUNNING)
            .order_by(FeedStatus.name))]
    for server in servers:
        server["starting"] = runs.syncing(server["name"]) and server["sync_status"] != "Running"
    return render(request, "dashboard.html", title="Dashboard", nav="dashboard", data=data,
                  charts=charts(data), servers=servers, scans=scans,
                  running=running_now(servers, scans, jobs, feeds))


def running_now(servers: list[dict[str, Any]], scans: list[dict[str, Any]],
                jobs: list[dict[str, Any]], feeds: list[dict[str, Any]] | None = None
                ) -> list[dict[str, Any]]:
    """Syncs (patch servers, vulnerability feeds), scans, install jobs and reports in
    progress, as one list of lines."""
    items: list[dict[str, Any]] = []
    for feed in feeds or []:
        items.append({"what": f"Sync of the {feed['name']} vulnerability feed", "href": None,
                      "detail": feed["message"] or "starting"})
    for s in servers:
        if s["starting"] or s["sync_status"] == "Running":
            items.append({"what": f"Sync of {s['name']}", "href":
                          f"/console/servers/{s['name']}/edit",
                          "detail": s["sync_message"] or "starting"})
    for scan in scans:
        if scan["status"] == "running":
            items.append({"what": f"Scan {scan['id']} ({scan['scope']})", "href": None,
                          "detail": f"{scan['done']} of {scan['total']} endpoints"})
    for job in jobs:
        items.append({"what": f"Install job {job['id']}", "href": f"/console/jobs/{job['id']}",
                      "detail": f"{job['status']}: {job['summary']}"})
    for run in runs.runs("report:"):
        if run.running:
            items.append({"what": f"Report by {run.started_by}", "href": "/console/reports",
                          "detail": run.label})
    return items
