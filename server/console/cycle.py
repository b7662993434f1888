"""The patch cycle: cycle runs per policy (state, trigger, steps), one run's steps and plan per
ring, Start run (a dry run or with install), and a policy's deployment rings.

Start run is `patchflow cycle run POLICY` without --wait: patchflow.cycle.runs.request writes the
Pending run and its audit line, and patchflow.cycle.launch starts the flow in its own process,
so the run outlives the request and a server restart. Rings call patchflow.cycle.rings, like
`patchflow cycle rings add|delete`; they are edited on the policy's page.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response

from patchflow import fleet
from patchflow.cycle import rings as ring_svc
from patchflow.cycle import runs as run_svc
from patchflow.cycle import window_store as window_svc
from patchflow.cycle.launch import spawn
from patchflow.errors import UserError
from server.console import policies
from server.console.core import (
    ConsoleRoute,
    Form,
    act,
    database_url,
    db,
    field_errors,
    form_of,
    redirect,
    render,
    user_of,
)
from server.params import DbId

router = APIRouter(route_class=ConsoleRoute)

RING_FIELDS = (("ring_delay", r"delay"), ("ring_rate", r"success.rate"),
               ("ring_gate", r"gate"), ("ring_groups", r"group"),
               ("ring_name", r"ring"))
STATE_ORDER = ("Running", "Paused", "Pending", "Failed", "Completed")


@router.get("/cycle")
def runs_page(request: Request) -> Response:
    policy = request.query_params.get("policy", "").strip()
    with db(request) as session:
        names = [p["name"] for p in fleet.list_policies(session)]
        rows = run_svc.list_runs(session, policy or None, limit=100)
    going = any(r["state"] in run_svc.GOING for r in rows)
    return render(request, "cycle_runs.html", title="Patch cycle", nav="cycle", runs=rows,
                  policies=names, policy=policy, going=going, errors={})


@router.get("/cycle/{run_id}")
def run_page(request: Request, run_id: DbId) -> Response:
    with db(request) as session:
        run = run_svc.to_dict(run_svc.get_run(session, run_id))
    rings: dict[str, list[dict[str, Any]]] = {}
    for row in run["plan"]:
        rings.setdefault(row["ring"], []).append(row)
    return render(request, "cycle_run.html", title=f"Cycle run {run_id}", nav="cycle",
                  run=run, rings=rings, going=run["state"] in run_svc.GOING)


@router.post("/cycle/start")
def start(request: Request) -> Response:
    """Start run: a dry run (sync, scan, approve; the plan, nothing installed) or a run that
    installs ring by ring; installing asks for a confirmation first."""
    form = form_of(request)
    policy, mode = form.get("policy"), form.get("mode")
    back = "/console/cycle"
    if mode not in ("dry-run", "install"):
        raise UserError("choose a dry run or a run that installs")
    if not policy:
        return redirect(back, "Choose the policy whose cycle runs.", "error")
    if mode == "install" and form.get("confirmed") != "yes":
        with db(request) as session:
            fleet.get_policy(session, policy)
        return render(request, "confirm.html", title="Run the patch cycle", nav="cycle",
                      question=f"Run the patch cycle of {policy} and install its approved "
                      "patches ring by ring, inside its maintenance windows?",
                      action="/console/cycle/start", button="Run and install",
                      cancel=back, fields={"policy": policy, "mode": mode})
    dry_run = mode == "dry-run"
    try:
        with db(request) as session:
            run = run_svc.request(session, policy, dry_run, user_of(request), source="console")
            run_id, name = run.id, run.policy_name
    except UserError as exc:
        return redirect(back, str(exc), "error")
    try:
        spawn(run_id, name, dry_run)
    except OSError as exc:
        with db(request) as session:
            run_svc.settle(session, run_id, f"could not start the cycle's process: {exc}")
        return redirect(f"/console/cycle/{run_id}", "Could not start the cycle's process.",
                        "error")
    what = "Dry run" if dry_run else "Cycle run"
    return redirect(f"/console/cycle/{run_id}", f"{what} {run_id} of {name} started.")


@router.post("/cycle/{run_id}/gate")
def answer_gate(request: Request, run_id: DbId) -> Response:
    """Resume or Reject a run waiting at a manual gate (`patchflow cycle resume RUN
    [--reject]`); rejecting halts the cycle, so it asks first."""
    from patchflow.cycle.gate import answer

    form = form_of(request)
    decision, reason = form.get("decision"), form.get("reason")
    if decision not in ("resume", "reject"):
        raise UserError("answer the gate with Resume or Reject")
    back = f"/console/cycle/{run_id}"
    if decision == "reject" and form.get("confirmed") != "yes":
        return render(request, "confirm.html", title="Reject at the gate", nav="cycle",
                      question=f"Reject cycle run {run_id} at its gate? The cycle halts "
                      "here and later rings are left untouched.",
                      action=f"/console/cycle/{run_id}/gate", button="Reject", cancel=back,
                      fields={"decision": decision, "reason": reason})

    def work() -> str:
        answer(run_id, decision == "resume", reason, user_of(request), source="console",
               url=database_url(request))
        return (f"Cycle run {run_id} resumed past its gate." if decision == "resume"
                else f"Cycle run {run_id} rejected at its gate: the cycle halts.")

    return act(back, work)


# --- rings (on the policy's page) ------------------------------------------------------------


def _ring_values(form: Form, errors: dict[str, str]) -> dict[str, Any]:
    """The ring form's fields; numbers are checked here so a typo is an error at its field."""
    values: dict[str, Any] = {"ring_name": form.get("ring_name"),
                              "ring_groups": form.getlist("ring_groups"),
                              "ring_delay": form.get("ring_delay") or "0",
                              "ring_rate": form.get("ring_rate") or "95",
                              "ring_gate": form.get("ring_gate") or "rate"}
    for name, label, top in (("ring_delay", "The delay", 86400),
                             ("ring_rate", "The minimum success rate", 100)):
        text = values[name]
        if not (text.isascii() and text.isdigit() and len(text) <= 6) or int(text) > top:
            errors[name] = f"{label} takes a whole number from 0 to {top}."
    if not values["ring_groups"]:
        errors["ring_groups"] = "Tick at least one group."
    return values


def _ring_error(request: Request, policy: str, values: dict[str, Any],
                errors: dict[str, str], editing: str | None) -> Response:
    """The policy's page again, with the ring form as sent and its errors."""
    return policies.policy_page(request, policy, ring_values=values, ring_errors=errors,
                                editing_ring=editing, status=400)


def _policy_back(policy: str) -> str:
    return f"/console/policies/{quote(policy, safe='')}/edit#rings"


def _save_ring(request: Request, editing: bool) -> Response:
    """Add or edit a ring from its form: the same fields, checks and error page."""
    form = form_of(request)
    policy, name = form.get("policy"), form.get("ring_name")
    errors: dict[str, str] = {}
    values = _ring_values(form, errors)
    if not errors:
        save = ring_svc.edit_ring if editing else ring_svc.add_ring
        try:
            with db(request) as session:
                save(session, policy, name, values["ring_groups"], user_of(request),
                     int(values["ring_delay"]), int(values["ring_rate"]), values["ring_gate"],
                     source="console")
        except UserError as exc:
            errors = field_errors(exc, RING_FIELDS)
    if errors:
        return _ring_error(request, policy, values, errors, name if editing else None)
    return redirect(_policy_back(policy), f"{'Saved' if editing else 'Added'} ring {name}.")


@router.post("/rings/add")
def add_ring(request: Request) -> Response:
    return _save_ring(request, editing=False)


@router.post("/rings/edit")
def edit_ring(request: Request) -> Response:
    return _save_ring(request, editing=True)


@router.post("/rings/move")
def move_ring(request: Request) -> Response:
    form = form_of(request)
    policy, name, way = form.get("policy"), form.get("ring_name"), form.get("direction")
    if way not in ("up", "down"):
        raise UserError("move a ring up or down")

    def work() -> str:
        with db(request) as session:
            out = ring_svc.move_ring(session, policy, name, -1 if way == "up" else 1,
                                     user_of(request), source="console")
        return "Ring order: " + " → ".join(r["name"] for r in out["rings"]) + "."

    return act(_policy_back(policy), work)


@router.post("/rings/delete")
def delete_ring(request: Request) -> Response:
    form = form_of(request)
    policy, name = form.get("policy"), form.get("ring_name")
    if form.get("confirmed") != "yes":
        with db(request) as session:
            ring_svc.list_rings(session, policy)
        return render(request, "confirm.html", title="Delete ring", nav="policies",
                      question=f"Delete ring {name} of policy {policy}? Endpoints of its "
                      "groups that no other ring names are then left out of cycle installs "
                      "(with no ring left, a cycle installs on all the policy's endpoints).",
                      action="/console/rings/delete", button="Delete ring",
                      cancel=_policy_back(policy),
                      fields={"policy": policy, "ring_name": name})

    def work() -> str:
        with db(request) as session:
            ring_svc.delete_ring(session, policy, name, user_of(request), source="console")
        return f"Deleted ring {name}."

    return act(_policy_back(policy), work)


# --- maintenance windows (on the policy's page) ------------------------------------------------

WINDOW_FIELDS = (("window_tz", r"time zone|--tz"), ("window_from", r"--from|start"),
                 ("window_to", r"--to\b|end"), ("window_days", r"day"))


def _windows_back(policy: str) -> str:
    return f"/console/policies/{quote(policy, safe='')}/edit#windows"


@router.post("/windows/add")
def add_window(request: Request) -> Response:
    form = form_of(request)
    policy = form.get("policy")
    values = {key: form.get(key).strip() for key in
              ("window_days", "window_from", "window_to", "window_tz")}
    try:
        with db(request) as session:
            added = window_svc.add_window(session, policy, values["window_days"],
                                          values["window_from"], values["window_to"],
                                          values["window_tz"], user_of(request),
                                          source="console")
    except UserError as exc:
        return policies.policy_page(request, policy, window_values=values,
                                    window_errors=field_errors(exc, WINDOW_FIELDS), status=400)
    return redirect(_windows_back(policy), f"Added the maintenance window {added['days']} "
                    f"{added['from']}–{added['to']} {added['tz']}.")


@router.post("/windows/delete")
def delete_window(request: Request) -> Response:
    form = form_of(request)
    policy, window = form.get("policy"), form.get("window")
    if not (window.isascii() and window.isdigit() and len(window) <= 12):
        raise UserError("choose a maintenance window to delete")
    if form.get("confirmed") != "yes":
        return render(request, "confirm.html", title="Delete maintenance window", nav="policies",
                      question=f"Delete this maintenance window of policy {policy}? With no "
                      "window left, its endpoints install whenever a job reaches them.",
                      action="/console/windows/delete", button="Delete window",
                      cancel=_windows_back(policy), fields={"policy": policy, "window": window})

    def work() -> str:
        with db(request) as session:
            window_svc.delete_window(session, policy, int(window), user_of(request),
                                     source="console")
        return "Deleted the maintenance window."

    return act(_windows_back(policy), work)
