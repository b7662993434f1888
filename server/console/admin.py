"""Administration: the console's administrators (add, remove, change a password), the audit
log, and backups (server/console/backups.py).

Accounts go through patchflow.ops.accounts, the functions behind `patchflow admin ...`; a
password change ends every session of that administrator (their session epoch changes), so
changing your own password logs you out here too. Every change is recorded in the audit log,
which this page and `patchflow audit list` read.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from patchflow.errors import UserError
from patchflow.ops import accounts, audit
from server.console.core import (
    ConsoleRoute,
    Form,
    db,
    field_errors,
    form_of,
    redirect,
    render,
    user_of,
)

router = APIRouter(route_class=ConsoleRoute)
BACK = "/console/admin"
AUDIT_PAGE = 200
_RULES = (("username", r"user name|already exists|no administrator"),
          ("password", r"password"))


def _page(request: Request, status: int = 200, form: str = "", errors: dict[str, str] | None
          = None, values: dict[str, str] | None = None) -> Response:
    with db(request) as session:
        admins = accounts.list_admins(session)
        events = audit.list_events(session, limit=10)
    return render(request, "admin.html", status=status, title="Administration", nav="admin",
                  admins=admins, events=events, me=user_of(request), failed_form=form,
                  errors=errors or {}, values=values or {})


@router.get("/admin")
def admin_page(request: Request) -> Response:
    return _page(request)


def _two_passwords(form: Form) -> str:
    password, again = form.raw("password") or "", form.raw("password_again") or ""
    if password != again:
        raise UserError("the two passwords differ: type the same password twice")
    return password


@router.post("/admin/users/new")
def add_admin(request: Request) -> Response:
    form = form_of(request)
    username = form.get("username")
    try:
        password = _two_passwords(form)
        with db(request) as session:
            accounts.add_admin(session, username, password)
            audit.record(session, user_of(request), "admin.add", username)
    except UserError as exc:
        return _page(request, 400, "add", field_errors(exc, _RULES), {"username": username})
    return redirect(BACK, f"Added administrator {username}.")


@router.post("/admin/users/{username}/password")
def change_password(request: Request, username: str) -> Response:
    form = form_of(request)
    try:
        password = _two_passwords(form)
        with db(request) as session:
            accounts.set_password(session, username, password)
            audit.record(session, user_of(request), "admin.password", username)
    except UserError as exc:
        return _page(request, 400, f"password-{username}", field_errors(exc, _RULES))
    if username == user_of(request):
        return redirect("/console/login", "Your password was changed: log in with the new "
                        "one (every session of yours has ended).")
    return redirect(BACK, f"Changed the password of {username}; their open sessions have "
                    "ended.")


@router.post("/admin/users/{username}/delete")
def remove_admin(request: Request, username: str) -> Response:
    if username == user_of(request):
        return redirect(BACK, "You cannot remove yourself: log in as another administrator "
                        "to do it.", "error")
    if form_of(request).get("confirmed") != "yes":
        return render(request, "confirm.html", title="Remove administrator", nav="admin",
                      question=f"Remove administrator {username}? Their sessions end at once.",
                      action=f"/console/admin/users/{username}/delete", button="Remove",
                      cancel=BACK)
    try:
        with db(request) as session:
            accounts.remove_admin(session, username)
            audit.record(session, user_of(request), "admin.remove", username)
    except UserError as exc:
        return redirect(BACK, str(exc), "error")
    return redirect(BACK, f"Removed administrator {username}.")


@router.get("/admin/audit")
def audit_page(request: Request, actor: str = "", action: str = "") -> Response:
    with db(request) as session:
        events = audit.list_events(session, limit=AUDIT_PAGE, actor=actor.strip() or None,
                                   action=action.strip() or None)
    return render(request, "audit.html", title="Audit log", nav="admin", events=events,
                  actor=actor.strip(), action=action.strip(), limit=AUDIT_PAGE)
