"""Policies: the patch server endpoints use, roaming behaviour, the scan schedule and automatic
install, applied to groups. Each save calls the patchflow.fleet function behind
`POST/PATCH /api/v1/admin/policies` and `patchflow policies add|edit`.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.orm import Session

from patchflow import fleet
from patchflow.catalog import servers as server_svc
from patchflow.errors import UserError
from patchflow.ops import audit
from server.console.core import (
    ConsoleRoute,
    Form,
    act,
    db,
    field_errors,
    form_of,
    redirect,
    render,
    user_of,
)

router = APIRouter(route_class=ConsoleRoute)

POLICY_FIELDS = (
    ("run_if_missed", r"run-if-missed"),
    ("scan_every_weeks", r"every-weeks"),
    ("scan_weekday", r"weekday|clear-schedule"),
    ("scan_at", r"time|scan-at"),
    ("patch_server", r"patch.server"),
    ("groups", r"group"),
    ("name", r"policy"),
)
BOOLEANS = ("roaming_microsoft", "run_if_missed", "auto_install", "auto_restart")


def policy_options(form: Form, errors: dict[str, str]) -> fleet.PolicyOptions:
    """Form → PolicyOptions. The form shows every setting, so an unticked box means off and
    an empty weekday means "no scan schedule"."""
    every: int | None = None
    text = form.get("scan_every_weeks") or "1"
    if re.fullmatch(r"\d{1,2}", text):
        every = int(text)
    else:
        errors["scan_every_weeks"] = "every N weeks takes a number from 1 to 52"
    weekday = form.get("scan_weekday")
    return fleet.PolicyOptions(
        patch_server=form.optional("patch_server"),
        groups=form.getlist("groups"),
        roaming_microsoft=form.flag("roaming_microsoft"),
        scan_weekday=weekday or None,
        scan_at=(form.get("scan_at") or None) if weekday else None,
        scan_every_weeks=every if weekday else None,
        clear_schedule=not weekday,
        run_if_missed=form.flag("run_if_missed"),
        auto_install=form.flag("auto_install"),
        auto_restart=form.flag("auto_restart"),
    )


def _choices(session: Session) -> dict[str, Any]:
    return {"servers": [s.name for s in server_svc.list_servers(session)],
            "groups": [(g["name"], g["path"]) for g in fleet.list_groups(session)],
            "weekdays": [(d, d.capitalize()) for d in fleet.WEEKDAYS]}


def _values(policy: dict[str, Any] | None) -> dict[str, Any]:
    """A stored policy (or the defaults) as the form's field values."""
    policy = policy or {}
    schedule = policy.get("scan_schedule") or {}
    return {
        "name": policy.get("name", ""),
        "patch_server": policy.get("patch_server") or "",
        "groups": policy.get("groups", []),
        "roaming_microsoft": policy.get("roaming_microsoft", False),
        "scan_weekday": schedule.get("weekday") or "",
        "scan_at": schedule.get("at") or "",
        "scan_every_weeks": schedule.get("every_weeks") or 1,
        "run_if_missed": policy.get("run_if_missed", False),
        "auto_install": policy.get("auto_install", False),
        "auto_restart": policy.get("auto_restart", False),
    }


def _form_values(form: Form) -> dict[str, Any]:
    values: dict[str, Any] = {k: form.get(k) for k in ("name", "patch_server", "scan_weekday",
                                                       "scan_at", "scan_every_weeks")}
    values["groups"] = form.getlist("groups")
    values.update({k: form.flag(k) for k in BOOLEANS})
    return values


@router.get("/policies")
def policies_page(request: Request) -> Response:
    with db(request) as session:
        policies = fleet.list_policies(session)
    return render(request, "policies.html", title="Policies", nav="policies", policies=policies)


RING_DEFAULTS = {"ring_name": "", "ring_groups": [], "ring_delay": "0", "ring_rate": "95",
                 "ring_gate": "rate"}
WINDOW_DEFAULTS = {"window_days": "mon-fri", "window_from": "02:00", "window_to": "05:00",
                   "window_tz": "UTC"}


def _form_page(request: Request, name: str | None, values: dict[str, Any],
               errors: dict[str, str], status: int = 200, **ring: Any) -> Response:
    """The policy's form; an existing policy's page also lists its deployment rings
    (server/console/cycle.py posts their forms, and re-renders this page on an error)."""
    rings: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    with db(request) as session:
        choices = _choices(session)
        if name:
            from patchflow.cycle.rings import list_rings
            from patchflow.cycle.window_store import list_windows

            rings = list_rings(session, name)
            windows = list_windows(session, name)
    title = f"Policy {name}" if name else "Add policy"
    return render(request, "policy_form.html", status=status, title=title, nav="policies",
                  policy_name=name, values=values, errors=errors, rings=rings,
                  ring_values={**RING_DEFAULTS, **(ring.get("ring_values") or {})},
                  ring_errors=ring.get("ring_errors") or {},
                  editing_ring=ring.get("editing_ring"), windows=windows,
                  window_values={**WINDOW_DEFAULTS, **(ring.get("window_values") or {})},
                  window_errors=ring.get("window_errors") or {}, **choices)


def policy_page(request: Request, name: str, status: int = 200, **ring: Any) -> Response:
    """An existing policy's page as stored (its rings' forms may carry what was sent)."""
    with db(request) as session:
        policy = fleet.policy_to_dict(session, fleet.get_policy(session, name))
    return _form_page(request, name, _values(policy), {}, status, **ring)


@router.get("/policies/new")
def add_form(request: Request) -> Response:
    return _form_page(request, None, _values(None), {})


@router.post("/policies/new")
def add_policy(request: Request) -> Response:
    form = form_of(request)
    errors: dict[str, str] = {}
    opts = policy_options(form, errors)
    name = form.get("name")
    if not errors:
        try:
            with db(request) as session:
                _policy, notes = fleet.add_policy(session, name, opts)
                audit.record(session, user_of(request), "policy.add", name)
        except UserError as exc:
            errors = field_errors(exc, POLICY_FIELDS)
    if errors:
        return _form_page(request, None, _form_values(form), errors, 400)
    return redirect("/console/policies", "; ".join([f"Added policy {name}", *notes]) + ".")


@router.get("/policies/{name:path}/edit")
def edit_form(request: Request, name: str) -> Response:
    return policy_page(request, name)


@router.post("/policies/{name:path}/edit")
def edit_policy(request: Request, name: str) -> Response:
    form = form_of(request)
    errors: dict[str, str] = {}
    opts = policy_options(form, errors)
    if not errors:
        try:
            with db(request) as session:
                _policy, notes = fleet.edit_policy(session, name, opts)
                audit.record(session, user_of(request), "policy.edit", name)
        except UserError as exc:
            errors = field_errors(exc, POLICY_FIELDS)
    if errors:
        return _form_page(request, name, {**_form_values(form), "name": name}, errors, 400)
    return redirect("/console/policies", "; ".join([f"Saved policy {name}", *notes]) + ".")


@router.post("/policies/{name:path}/delete")
def delete_policy(request: Request, name: str) -> Response:
    if form_of(request).get("confirmed") != "yes":
        with db(request) as session:
            fleet.get_policy(session, name)
        return render(request, "confirm.html", title="Delete policy", nav="policies",
                      question=f"Delete policy {name}? Its groups keep no policy until you "
                      "give them another.", action=f"/console/policies/{name}/delete",
                      button="Delete", cancel=f"/console/policies/{name}/edit")
    def work() -> str:
        with db(request) as session:
            fleet.delete_policy(session, name)
            audit.record(session, user_of(request), "policy.delete", name)
        return f"Deleted policy {name}."

    return act("/console/policies", work)
