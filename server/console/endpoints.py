"""Endpoints (Status): the group tree, each endpoint's scan state and last contact, and the
client action Patch Scan (Start Scan / Stop Scan) for the endpoints ticked.

Rows come from patchflow.fleet.list_endpoints (what `GET /api/v1/admin/endpoints` returns);
scans start the same Prefect scan flow as `patchflow scan --endpoints ...`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import MissingPatch
from models.base import utcnow
from models.enums import ScanState
from patchflow import fleet
from patchflow.errors import UserError
from patchflow.fleet import endpoint_view
from patchflow.ops import audit
from server.console import runs
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
from server.console.wording import plural

router = APIRouter(route_class=ConsoleRoute)
PAGE_SIZE = 200


def group_tree(session: Session) -> list[dict[str, Any]]:
    """The groups as nested nodes {name, endpoints, total, children}; `total` counts the
    subgroups' endpoints too, which is what selecting a group lists."""
    rows = fleet.list_groups(session)
    nodes = {r["name"]: {"name": r["name"], "endpoints": r["endpoints"], "policy":
                         r["effective_policy"], "children": []} for r in rows}
    roots: list[dict[str, Any]] = []
    for row in rows:
        parent = nodes.get(row["parent"]) if row["parent"] else None
        (parent["children"] if parent else roots).append(nodes[row["name"]])

    def total(node: dict[str, Any]) -> int:
        node["total"] = node["endpoints"] + sum(total(c) for c in node["children"])
        return int(node["total"])

    for root in roots:
        total(root)
    return roots


SCAN_STATES = [s.value for s in ScanState]


@dataclass(frozen=True)
class View:
    """The list's query parameters: group (with subgroups), host name, scan state, presence."""

    group: str = ""
    q: str = ""
    state: str = ""
    presence: str = ""
    page: int = 1

    def query(self, page: int | None = None) -> str:
        values = {"group": self.group, "q": self.q, "state": self.state,
                  "presence": self.presence}
        if page is not None:
            values["page"] = str(page)
        return urlencode({k: v for k, v in values.items() if v})


def _listing(session: Session, view: View) -> dict[str, Any]:
    rows = fleet.list_endpoints(session, view.group or None)
    extras = endpoint_view.listing_extras(session)
    now, poll = utcnow(), endpoint_view.poll_seconds()
    for row in rows:
        extra = extras.get(row["hostname"], {}) if not row["pending_reenrollment"] else {}
        row["scan_state_at"] = extra.get("scan_state_at")
        row["missing"] = extra.get("missing", 0)
        row["presence"] = endpoint_view.presence(row["last_seen"], row["enrolled"], now, poll)
    if view.q:
        needle = view.q.casefold()
        rows = [r for r in rows if needle in r["hostname"].casefold()]
    if view.state:
        rows = [r for r in rows if r["scan_state"] == view.state]
    if view.presence:
        rows = [r for r in rows if r["presence"] == view.presence]
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(view.page, 1), pages)
    shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    scanning = any(r["scan_state"] == ScanState.SCANNING for r in shown)
    return {"rows": shown, "count": len(rows), "page": page, "pages": pages,
            "running": scanning or any(r.running for r in runs.runs("scan:"))}


def _view(group: str, q: str, state: str, presence: str, page: int) -> View:
    if state and state not in SCAN_STATES:
        raise UserError(f"unknown scan state {state!r}: choose one from the list")
    if presence and presence not in endpoint_view.PRESENCE:
        raise UserError(f"unknown agent status {presence!r}: choose one from the list")
    return View(group, q.strip(), state, presence, page)


@router.get("/endpoints")
def endpoints_page(request: Request, group: str = "", q: str = "", state: str = "",
                   presence: str = "", page: int = 1) -> Response:
    view = _view(group, q, state, presence, page)
    with db(request) as session:
        tree = group_tree(session)
        listing = _listing(session, view)
        groups = [(g["name"], g["path"]) for g in fleet.list_groups(session)]
    return render(request, "endpoints.html", title="Endpoints", nav="endpoints", tree=tree,
                  group=view.group, q=view.q, view=view, groups=groups,
                  scan_states=SCAN_STATES, presences=endpoint_view.PRESENCE, **listing)


@router.get("/endpoints.json")
def endpoints_rows(request: Request, group: str = "", q: str = "", state: str = "",
                   presence: str = "", page: int = 1) -> Response:
    """The table's rows again, for the page's refresh while a scan runs."""
    view = _view(group, q, state, presence, page)
    with db(request) as session:
        listing = _listing(session, view)
    return JSONResponse({"html": render_fragment("_endpoint_rows.html", rows=listing["rows"]),
                         "running": listing["running"]})


def _back(request: Request) -> str:
    target = form_of(request).get("back")
    return target if target.startswith("/console/endpoints") else "/console/endpoints"


@router.post("/endpoints/scan")
def start_scan(request: Request) -> Response:
    hostnames = form_of(request).getlist("endpoint")

    def work() -> str:
        with db(request) as session:
            runs.start_scan(session, hostnames, user_of(request))
        shown = ", ".join(hostnames[:5]) + (f" and {len(hostnames) - 5} more"
                                             if len(hostnames) > 5 else "")
        return f"Started a patch scan of {shown}."

    return act(_back(request), work)


@router.post("/endpoints/scan/stop")
def stop_scan(request: Request) -> Response:
    def work() -> str:
        with db(request) as session:
            stopped = runs.stop_scans(session)
        return f"Asked {plural(stopped, 'running scan')} to stop."

    return act(_back(request), work)


# --- one endpoint ------------------------------------------------------------------------------


@router.get("/endpoints/{hostname}")
def endpoint_page(request: Request, hostname: str) -> Response:
    """OS and build, agent online or offline, group and policy, missing patches with reasons,
    installed updates, the scans that covered it and its install history; Scan now and
    Install selected."""
    with db(request) as session:
        detail = endpoint_view.endpoint_detail(session, hostname)
    return render(request, "endpoint.html", title=detail["hostname"], nav="endpoints", e=detail)


@router.post("/endpoints/{hostname}/install")
def install_selected(request: Request, hostname: str) -> Response:
    """The ticked missing patches of this endpoint as one install job, launched at once.
    Patches it no longer misses (rescanned meanwhile) are left out."""
    from patchflow.install import create_job
    from patchflow.install.launch import launch

    form = form_of(request)
    back = f"/console/endpoints/{quote(hostname, safe='')}"
    wanted = {int(v) for v in form.getlist("patch") if v.isdigit()}
    try:
        with db(request) as session:
            endpoint = fleet.get_endpoint(session, hostname)
            if endpoint.revoked:
                raise UserError(f"{endpoint.hostname} is revoked: nothing can be installed on it")
            missing = set(session.scalars(select(MissingPatch.patch_id).where(
                MissingPatch.endpoint_id == endpoint.id)))
            chosen = sorted(wanted & missing)
            if not chosen:
                raise UserError("tick the missing patches to install first")
            job = create_job(session, [(p, endpoint.id) for p in chosen], user_of(request),
                             allow_restart=form.flag("allow_restart"))
            job_id = job.id
            audit.record(session, user_of(request), "install.start", f"job {job_id}",
                         f"{plural(len(chosen), 'patch', 'patches')} on {endpoint.hostname}")
    except UserError as exc:
        return redirect(back, str(exc), "error")
    launch(job_id)
    return redirect(f"/console/jobs/{job_id}",
                    f"Started install job {job_id} ({plural(len(chosen), 'patch', 'patches')} "
                    f"on {hostname}).")
