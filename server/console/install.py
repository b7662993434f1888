"""Patch Install: the missing patches with the four filters, a patch's endpoints dialog, the
selection, EULA acceptance and Start Install; plus the patch details page reports link to.

Everything goes through patchflow.install, the functions behind `patchflow install ...`,
`patchflow eula ...` and the install admin API: the list is `install_list` (built on the same
query as `patchflow missing` and the reports, so the counts agree), the dialog's Apply is
`select_pairs` / `unselect_pairs`, and Start Install is `start_from_selection` followed by the
same detached launch of the install flow the admin API uses.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Endpoint, MissingPatch
from models.enums import Category, EulaStatus, RestartRequired, Severity
from patchflow import fleet
from patchflow import install as inst
from patchflow.errors import UserError
from patchflow.fleet.groups import group_ids
from patchflow.ops import audit
from patchflow.scanning.missing_query import MissingFilters
from server.console.core import (
    ConsoleRoute,
    act,
    db,
    form_of,
    redirect,
    render,
    user_of,
    wants_json,
)
from server.console.wording import for_web, plural
from server.params import DbId

router = APIRouter(route_class=ConsoleRoute)

FILTERS = (("severity", "Severity", [s.value for s in Severity]),
           ("category", "Category", [c.value for c in Category]),
           ("restart", "Restart Required", [r.value for r in RestartRequired]),
           ("eula", "EULA Status", [EulaStatus.ACCEPTED.value, EulaStatus.NOT_ACCEPTED.value]))
DIALOG_ROWS = 1000  # endpoints listed in the dialog; "all affected" selects beyond them
_EULA_KEYS = {EulaStatus.ACCEPTED.value: "accepted", EulaStatus.NOT_ACCEPTED.value: "not-accepted"}


def view_filters(params: dict[str, str]) -> MissingFilters:
    """The page's query parameters (one value per filter, '' = All) as MissingFilters."""
    eula = params.get("eula", "")
    group = params.get("group", "")
    return MissingFilters(
        group=group or None,
        subgroups=bool(group) and params.get("subgroups") == "on",
        severity=(params["severity"],) if params.get("severity") else (),
        category=(params["category"],) if params.get("category") else (),
        restart=(params["restart"],) if params.get("restart") else (),
        eula=_EULA_KEYS.get(eula, eula) or None,
        exploited=params.get("exploited") == "yes",
    )


@router.get("/install")
def install_page(request: Request) -> Response:
    params = {k: request.query_params.get(k, "") for k in
              ("severity", "category", "restart", "eula", "exploited", "group", "subgroups")}
    error = None
    rows: list[dict[str, Any]] = []
    filters = MissingFilters()
    with db(request) as session:
        groups = [(g["name"], g["path"]) for g in fleet.list_groups(session)]
        try:
            filters = view_filters(params)
            rows = inst.install_list(session, filters)
        except UserError as exc:
            error = for_web(str(exc))
        selection = inst.selection_rows(session)
    return render(request, "install.html", title="Patch Install", nav="install", rows=rows,
                  params=params, filters=FILTERS, groups=groups, error=error,
                  selection=selection, selected_pairs=len(selection),
                  report_filters=filters.to_json() if error is None else {},
                  eula_keys=_EULA_KEYS)


@router.post("/install/refresh")
def refresh(request: Request) -> Response:
    def work() -> str:
        with db(request) as session:
            dropped = inst.refresh_selection(session)
        return f"Cleared the selection ({plural(dropped, 'pair')})."

    return act(_back(request), work)


@router.post("/install/start")
def start_install(request: Request) -> Response:
    """`patchflow install start`: the whole selection becomes one job, launched like the admin
    API launches it; a refusal (a EULA not accepted, nothing selected) comes back as a
    message on the Patch Install page."""
    from patchflow.install.launch import launch

    allow_restart = form_of(request).flag("allow_restart")
    try:
        with db(request) as session:
            job = inst.start_from_selection(session, user_of(request),
                                            allow_restart=allow_restart)
            job_id = job.id
            audit.record(session, user_of(request), "install.start", f"job {job_id}",
                         "restart allowed" if allow_restart else None)
    except UserError as exc:
        return redirect(_back(request), str(exc), "error")
    launch(job_id)  # after the commit: the flow's process reads the job from the database
    return redirect(f"/console/jobs/{job_id}", f"Started install job {job_id}.")


@router.post("/install/many")
def install_many(request: Request) -> Response:
    """The ticked patches on every endpoint that misses them (within the page's group filter),
    as one install job, launched at once; the selection is left alone."""
    from patchflow.install.launch import launch

    form = form_of(request)
    patch_ids = [int(v) for v in form.getlist("patch") if v.isdigit()]
    group = form.get("group")
    back = "/console/install" + (f"?group={quote(group)}" if group else "")
    try:
        if not patch_ids:
            raise UserError("tick the patches to install first")
        with db(request) as session:
            scope = (set(group_ids(session, group, form.get("subgroups") == "on"))
                     if group else None)
            pairs = affected_pairs(session, patch_ids, scope)
            if not pairs:
                raise UserError("none of the ticked patches is missing on an active endpoint"
                                + (f" in {group}" if group else "") + " (per the last scans)")
            job = inst.create_job(session, pairs, user_of(request),
                                  allow_restart=form.flag("allow_restart"))
            job_id = job.id
            hosts = len({e for _p, e in pairs})
            audit.record(session, user_of(request), "install.start", f"job {job_id}",
                         f"{plural(len(patch_ids), 'patch', 'patches')} on every affected "
                         f"endpoint" + (f" in {group}" if group else ""))
    except UserError as exc:
        return redirect(back, str(exc), "error")
    launch(job_id)
    return redirect(f"/console/jobs/{job_id}", f"Started install job {job_id}: "
                    f"{plural(len(patch_ids), 'patch', 'patches')} on "
                    f"{plural(hosts, 'endpoint')} ({plural(len(pairs), 'item')}).")


def affected_pairs(session: Session, patch_ids: list[int], scope: set[int] | None
                   ) -> list[tuple[int, int]]:
    """(patch, endpoint) for every active endpoint missing each patch, optionally only those
    whose group is in `scope`."""
    query = (select(MissingPatch.patch_id, MissingPatch.endpoint_id, Endpoint.group_id)
             .join(Endpoint, Endpoint.id == MissingPatch.endpoint_id)
             .where(MissingPatch.patch_id.in_(patch_ids), Endpoint.revoked.is_(False),
                    Endpoint.replaces_endpoint_id.is_(None)))
    return [(int(p), int(e)) for p, e, g in session.execute(query).tuples()
            if scope is None or g in scope]


def _back(request: Request) -> str:
    target = form_of(request).get("back")
    return target if target.startswith("/console/") else "/console/install"


# --- one patch ---------------------------------------------------------------------------------


@router.get("/patches/{patch_id}")
def patch_page(request: Request, patch_id: DbId) -> Response:
    """A patch's details, its EULA, and the endpoints it is missing on (the dialog). The
    dialog lists at most DIALOG_ROWS endpoints; "all affected" covers the rest."""
    with db(request) as session:
        data = inst.install_show(session, str(patch_id))
        vulns = patch_vulns(session, patch_id)
    shown = data["endpoints"][:DIALOG_ROWS]
    return render(request, "patch.html", title=data["title"], nav="install", patch=data,
                  shown=shown, hidden_count=len(data["endpoints"]) - len(shown), vulns=vulns)


def patch_vulns(session: Session, patch_id: int) -> dict[str, Any]:
    """`patches show --json`'s vulnerabilities of the patch, and its pairs' ratings as
    `missing --json` gives them (severity, exploited: the worst over its missing pairs)."""
    from models import Patch
    from patchflow.catalog.vuln_query import enrich_missing, patch_rollup, patch_vulnerabilities
    from patchflow.scanning.missing_query import load_missing

    patch = session.get(Patch, patch_id)
    if patch is None:
        return {"vulnerabilities": [], "cvss_max": None, "exploited": False, "pairs": None}
    out = patch_vulnerabilities(session, patch)
    pairs = load_missing(session)
    pairs = pairs[pairs["patch_id"].astype("int64") == patch_id].reset_index(drop=True)
    rolled = patch_rollup(enrich_missing(session, pairs))
    out["pairs"] = rolled.iloc[0].to_dict() if not rolled.empty else None
    return out


@router.post("/patches/{patch_id}/select")
def apply_selection(request: Request, patch_id: DbId) -> Response:
    """The dialog's Apply: exactly the ticked endpoints are selected for this patch."""
    form = form_of(request)
    wanted = form.getlist("endpoint")
    with db(request) as session:
        shown = inst.install_show(session, str(patch_id))
        previously = {e["endpoint"] for e in shown["endpoints"] if e["selected"]}
        note = None
        if form.flag("all_affected"):
            result = inst.select_pairs(session, str(patch_id), all_affected=True,
                                       who=user_of(request))
            note = result["note"]
            wanted = sorted(previously | {e["endpoint"] for e in shown["endpoints"]
                                          if not e["revoked"]})
        elif wanted:
            result = inst.select_pairs(session, str(patch_id), endpoints=wanted,
                                       who=user_of(request))
            note = result["note"]
        dropped = sorted(previously - set(wanted))
        if dropped or not wanted:
            inst.unselect_pairs(session, str(patch_id), endpoints=dropped or None)
        selected = inst.install_show(session, str(patch_id))["endpoints_selected"]
        total = len(inst.selection_rows(session))
    message = f"{selected} of {plural(shown['endpoints_affected'], 'endpoint')} selected " \
              f"for {shown['patch']}."
    if wants_json(request):
        return JSONResponse({"selected": selected, "affected": shown["endpoints_affected"],
                             "total_selected": total, "note": note, "message": message})
    return redirect(f"/console/patches/{patch_id}", message + (f" {note}" if note else ""),
                    "note" if note else "ok")


@router.post("/patches/{patch_id}/eula")
def accept_eula(request: Request, patch_id: DbId) -> Response:
    def work() -> str:
        with db(request) as session:
            result = inst.accept_eula(session, str(patch_id), user_of(request))
        return str(result["note"] or f"Accepted the EULA of {result['patch']}.")

    return act(f"/console/patches/{patch_id}", work)
