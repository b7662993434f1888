"""Groups: add, rename, nest (choose a parent), delete; and move the endpoints ticked on the
Endpoints page into a group.

Adding is patchflow.fleet.add_group (`patchflow groups add`); rename, parent and delete are
patchflow.fleet.group_admin. Every change is written to the audit log in the same transaction.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from patchflow import fleet
from patchflow.errors import UserError
from patchflow.fleet import group_admin
from patchflow.ops import audit
from server.console.core import ConsoleRoute, act, db, form_of, redirect, render, user_of
from server.console.endpoints import group_tree
from server.console.wording import plural

router = APIRouter(route_class=ConsoleRoute)
BACK = "/console/groups"


@router.get("/groups")
def groups_page(request: Request) -> Response:
    with db(request) as session:
        rows = fleet.list_groups(session)
        tree = group_tree(session)
    return render(request, "groups.html", title="Groups", nav="endpoints", groups=rows,
                  tree=tree, names=[r["name"] for r in rows])


@router.post("/groups/new")
def add_group(request: Request) -> Response:
    form = form_of(request)
    name, parent = form.get("name"), form.optional("parent")

    def work() -> str:
        with db(request) as session:
            fleet.add_group(session, name, parent)
            audit.record(session, user_of(request), "group.add", name,
                         f"under {parent}" if parent else None)
        return f"Added group {name}" + (f" under {parent}." if parent else ".")

    return act(BACK, work)


@router.post("/groups/{name:path}/edit")
def edit_group(request: Request, name: str) -> Response:
    """One form per group: its name and its parent, saved together."""
    form = form_of(request)
    new_name, parent = form.get("name"), form.optional("parent")

    def work() -> str:
        with db(request) as session:
            group = group_admin.rename_group(session, name, new_name)
            group_admin.set_parent(session, group.name, parent)
            detail = f"renamed to {group.name}; " if group.name != name else ""
            audit.record(session, user_of(request), "group.edit", name,
                         f"{detail}parent {parent or '(top level)'}")
        return f"Saved group {group.name}."

    return act(BACK, work)


@router.post("/groups/{name:path}/delete")
def delete_group(request: Request, name: str) -> Response:
    if form_of(request).get("confirmed") != "yes":
        return render(request, "confirm.html", title="Delete group", nav="endpoints",
                      question=f"Delete group {name}? Its endpoints move to its parent group "
                      "(or become ungrouped).", action=f"/console/groups/{name}/delete",
                      button="Delete group", cancel=BACK)

    def work() -> str:
        with db(request) as session:
            moved = group_admin.delete_group(session, name)
            audit.record(session, user_of(request), "group.delete", name,
                         f"{plural(moved, 'endpoint')} moved up" if moved else None)
        return f"Deleted group {name}" + (
            f"; {plural(moved, 'endpoint')} moved to its parent." if moved else ".")

    return act(BACK, work)


@router.post("/endpoints/move")
def move_endpoints(request: Request) -> Response:
    form = form_of(request)
    hostnames, group = form.getlist("endpoint"), form.get("move_to")
    back = form.get("back")
    back = back if back.startswith("/console/endpoints") else "/console/endpoints"
    if not group:
        return redirect(back, "Choose the group to move the ticked endpoints to.", "error")
    try:
        with db(request) as session:
            moved = group_admin.move_endpoints(session, hostnames, group)
            audit.record(session, user_of(request), "endpoints.move", group,
                         ", ".join(moved)[:4000])
    except UserError as exc:
        return redirect(back, str(exc), "error")
    return redirect(back, f"Moved {plural(len(moved), 'endpoint')} to {group}.")
