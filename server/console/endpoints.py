"""Endpoints (Status): the group tree, each endpoint's scan state and last contact, and the
client action Patch Scan (Start Scan / Stop Scan) for the endpoints ticked.

Rows come from patchflow.fleet.list_endpoints (what `GET /api/v1/admin/endpoints` returns);
scans start the same Prefect scan flow as `patchflow scan --endpoints ...`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from models.enums import ScanState
from patchflow import fleet
from server.console import runs
from server.console.core import (
    ConsoleRoute,
    act,
    db,
    form_of,
    render,
    render_fragment,
    user_of,
)

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


def _listing(session: Session, group: str | None, q: str, page: int) -> dict[str, Any]:
    rows = fleet.list_endpoints(session, group or None)
    if q:
        needle = q.casefold()
        rows = [r for r in rows if needle in r["hostname"].casefold()]
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    shown = rows[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    scanning = any(r["scan_state"] == ScanState.SCANNING for r in shown)
    return {"rows": shown, "count": len(rows), "page": page, "pages": pages,
            "running": scanning or any(r.running for r in runs.runs("scan:"))}


@router.get("/endpoints")
def endpoints_page(request: Request, group: str = "", q: str = "", page: int = 1) -> Response:
    with db(request) as session:
        tree = group_tree(session)
        listing = _listing(session, group, q.strip(), page)
    return render(request, "endpoints.html", title="Endpoints", nav="endpoints", tree=tree,
                  group=group, q=q.strip(), **listing)


@router.get("/endpoints.json")
def endpoints_rows(request: Request, group: str = "", q: str = "", page: int = 1) -> Response:
    """The table's rows again, for the page's refresh while a scan runs."""
    with db(request) as session:
        listing = _listing(session, group, q.strip(), page)
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
        return f"Asked {stopped} running scan(s) to stop."

    return act(_back(request), work)
