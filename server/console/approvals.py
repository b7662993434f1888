"""Approvals and declines, and the automatic approval rules: who approved which patch for which
groups, which patches nobody is offered, and what each rule would approve now.

Every action calls the patchflow.install.approvals / patchflow.install.approval_rules function
behind `patchflow approve|unapprove|decline|undecline` and `patchflow rules add|delete|preview`,
with the console as the audit source; the services write the audit line in the same transaction.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from models.enums import Category, Severity
from patchflow import fleet
from patchflow.catalog.catalog_query import find_patch
from patchflow.errors import UserError
from patchflow.install import approval_rules, approvals
from server.console import wording
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

APPROVE_FIELDS = (("deadline", r"deadline|date"), ("groups", r"group"),
                  ("patch", r"patch|declined"))
DECLINE_FIELDS = (("decline_patch", r"patch"), ("reason", r"reason"))
RULE_FIELDS = (("name", r"rule name|a rule named"), ("groups", r"group"),
               ("severity", r"severity"), ("category", r"category"),
               ("delay_days", r"delay"), ("deadline_days", r"deadline"),
               ("products", r"product"))
PAGE = "/console/approvals"
RULES = "/console/rules"


def _groups(session: Any) -> list[tuple[str, str]]:
    return [(g["name"], g["path"]) for g in fleet.list_groups(session)]


def _patch_of(session: Any, ref: str) -> dict[str, Any] | None:
    """The patch the page is about (`?patch=` from a patch's page), with whether it is
    declined; None without one."""
    if not ref:
        return None
    from models import PatchDecline

    patch = find_patch(session, ref)
    return {"id": patch.id, "label": approvals.label(patch), "title": patch.title,
            "declined": session.get(PatchDecline, patch.id) is not None}


def _page(request: Request, values: dict[str, Any] | None = None,
          errors: dict[str, str] | None = None, status: int = 200) -> Response:
    ref = request.query_params.get("patch", "").strip() or (values or {}).get("focus", "")
    group = request.query_params.get("group", "").strip()
    with db(request) as session:
        patch = _patch_of(session, ref)
        rows = approvals.list_approvals(session, group or None)  # a group: no declines
        groups = _groups(session)
    if patch is not None:
        rows = [r for r in rows if r["patch_id"] == patch["id"]]
    defaults = {"patch": patch["label"] if patch else "", "groups": [], "deadline": "",
                "decline_patch": patch["label"] if patch else "", "reason": ""}
    return render(request, "approvals.html", status=status, title="Approvals",
                  nav="approvals", patch=patch, groups=groups, group=group,
                  approved=[r for r in rows if r["kind"] == "approved"],
                  declined=[r for r in rows if r["kind"] == "declined"],
                  values={**defaults, **(values or {})}, errors=errors or {})


def _back(form: Form) -> str:
    """Back to the page the form was on: the full list, or one patch's approvals."""
    focus = form.get("focus")
    return f"{PAGE}?patch={focus}" if focus and focus.isascii() and focus.isdigit() else PAGE


@router.get("/approvals")
def approvals_page(request: Request) -> Response:
    return _page(request)


@router.post("/approvals/approve")
def approve(request: Request) -> Response:
    form = form_of(request)
    values = {"patch": form.get("patch"), "groups": form.getlist("groups"),
              "deadline": form.get("deadline"), "focus": form.get("focus")}
    errors: dict[str, str] = {}
    if not values["patch"]:
        errors["patch"] = "Give the patch: a KB number, PACKAGE@VERSION or a patch id."
    if not values["groups"]:
        errors["groups"] = "Tick at least one group."
    if not errors:
        try:
            with db(request) as session:
                out = approvals.approve(session, values["patch"], values["groups"],
                                        user_of(request), values["deadline"] or None,
                                        source="console")
        except UserError as exc:
            errors = field_errors(exc, APPROVE_FIELDS)
    if errors:
        return _page(request, values, errors, 400)
    deadline = f", install by {out['deadline']}" if out["deadline"] else ""
    return redirect(_back(form), f"Approved {out['patch']} for "
                    f"{', '.join(out['groups'])}{deadline}.")


@router.post("/approvals/unapprove")
def unapprove(request: Request) -> Response:
    form = form_of(request)
    patch, group = form.get("patch"), form.get("group")
    if form.get("confirmed") != "yes":
        return render(request, "confirm.html", title="Withdraw approval", nav="approvals",
                      question=f"Withdraw the approval of {patch} for {group}? Cycles no "
                      "longer install it there unless a rule approves it.",
                      action="/console/approvals/unapprove", button="Withdraw approval",
                      cancel=_back(form), fields={"patch": patch, "group": group,
                                                  "focus": form.get("focus")})

    def work() -> str:
        with db(request) as session:
            out = approvals.unapprove(session, patch, [group], user_of(request),
                                      source="console")
        if not out["removed"]:
            raise UserError(f"{out['patch']} was not approved for {group}")
        return f"Withdrew the approval of {out['patch']} for {group}."

    return act(_back(form), work)


@router.post("/approvals/decline")
def decline(request: Request) -> Response:
    form = form_of(request)
    values = {"decline_patch": form.get("decline_patch"), "reason": form.get("reason"),
              "focus": form.get("focus")}
    errors: dict[str, str] = {}
    if not values["decline_patch"]:
        errors["decline_patch"] = "Give the patch: a KB number, PACKAGE@VERSION or a patch id."
    elif form.get("confirmed") != "yes":
        return render(request, "confirm.html", title="Decline patch", nav="approvals",
                      question=f"Decline {values['decline_patch']}? It is no longer offered "
                      "nor counted as missing anywhere, and leaves the install list.",
                      action="/console/approvals/decline", button="Decline",
                      cancel=_back(form), fields=values)
    if not errors:
        try:
            with db(request) as session:
                out = approvals.decline(session, values["decline_patch"], user_of(request),
                                        values["reason"] or None, source="console")
        except UserError as exc:
            errors = field_errors(exc, DECLINE_FIELDS)
    if errors:
        return _page(request, values, errors, 400)
    return redirect(_back(form), f"{out['patch']} was already declined." if out["already"]
                    else f"Declined {out['patch']}.")


@router.post("/approvals/undecline")
def undecline(request: Request) -> Response:
    form = form_of(request)

    def work() -> str:
        with db(request) as session:
            out = approvals.undecline(session, form.get("patch"), user_of(request),
                                      source="console")
        return f"{out['patch']} is offered again."

    return act(_back(form), work)


@router.post("/approvals/decline-superseded")
def decline_superseded(request: Request) -> Response:
    if form_of(request).get("confirmed") != "yes":
        return render(request, "confirm.html", title="Decline superseded patches",
                      nav="approvals", question="Decline every patch a newer patch "
                      "supersedes? Each keeps the newer patch's name as its reason.",
                      action="/console/approvals/decline-superseded",
                      button="Decline superseded patches", cancel=PAGE)

    def work() -> str:
        with db(request) as session:
            out = approvals.decline_superseded(session, user_of(request), source="console")
        return (f"Declined {out['count']} superseded patch{'es' if out['count'] != 1 else ''}."
                if out["count"] else "No superseded patch left to decline.")

    return act(PAGE, work)


# --- rules -------------------------------------------------------------------------------------


def _rule_choices() -> dict[str, Any]:
    return {"severities": [s.value for s in Severity],
            "categories": [c.value for c in Category]}


def _rules_page(request: Request, values: dict[str, Any] | None = None,
                errors: dict[str, str] | None = None, status: int = 200) -> Response:
    with db(request) as session:
        rules = approval_rules.list_rules(session)
        groups = _groups(session)
    defaults = {"name": "", "groups": [], "severity": [], "category": [], "products": "",
                "exploited": False, "delay_days": "0", "deadline_days": ""}
    return render(request, "rules.html", status=status, title="Approval rules",
                  nav="approvals", rules=rules, groups=groups,
                  values={**defaults, **(values or {})}, errors=errors or {},
                  **_rule_choices())


def _days(text: str, name: str, label: str, errors: dict[str, str]) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        errors[name] = (f"{label} takes a whole number of days from 0 to "
                        f"{approval_rules.MAX_DAYS}.")
        return None
    return int(text)


@router.get("/rules")
def rules_page(request: Request) -> Response:
    return _rules_page(request)


@router.post("/rules/new")
def add_rule(request: Request) -> Response:
    form = form_of(request)
    values = {"name": form.get("name"), "groups": form.getlist("groups"),
              "severity": form.getlist("severity"), "category": form.getlist("category"),
              "products": form.get("products"), "exploited": form.flag("exploited"),
              "delay_days": form.get("delay_days"), "deadline_days": form.get("deadline_days")}
    errors: dict[str, str] = {}
    delay = _days(values["delay_days"], "delay_days", "The delay after release", errors)
    deadline = _days(values["deadline_days"], "deadline_days", "The deadline after approval",
                     errors)
    if not values["groups"]:
        errors["groups"] = "Tick at least one group."
    if not errors:
        try:
            with db(request) as session:
                out = approval_rules.add_rule(
                    session, values["name"], values["groups"], user_of(request),
                    severities=values["severity"], categories=values["category"],
                    products=values["products"].split(","),
                    exploited=values["exploited"], delay_days=delay or 0,
                    deadline_days=deadline, source="console")
        except UserError as exc:
            errors = field_errors(exc, RULE_FIELDS)
    if errors:
        return _rules_page(request, values, errors, 400)
    return redirect(RULES, f"Added rule {out['name']}: {out['description']}.")


@router.get("/rules/{name}")
def preview(request: Request, name: str) -> Response:
    """What the rule would approve now, why, and on how many of its endpoints each patch is
    missing (`patchflow rules preview NAME`)."""
    with db(request) as session:
        out = approval_rules.preview_rule(session, name)
    return render(request, "rule.html", title=f"Rule {out['rule']['name']}", nav="approvals",
                  rule=out["rule"], rows=out["approves"],
                  notes=[wording.for_web(n) for n in out["notes"]])


@router.post("/rules/{name}/delete")
def delete_rule(request: Request, name: str) -> Response:
    if form_of(request).get("confirmed") != "yes":
        with db(request) as session:
            approval_rules.get_rule(session, name)
        return render(request, "confirm.html", title="Delete rule", nav="approvals",
                      question=f"Delete rule {name}? Patches it approved are no longer "
                      "installed by later cycles unless approved otherwise.",
                      action=f"/console/rules/{name}/delete", button="Delete rule",
                      cancel=RULES)

    def work() -> str:
        with db(request) as session:
            approval_rules.delete_rule(session, name, user_of(request), source="console")
        return f"Deleted rule {name}."

    return act(RULES, work)
