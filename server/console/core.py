"""What every console page shares: the route class (login, CSRF, errors, security headers),
templates, forms, flash messages and mapping a service's one-line error to a form field.

Every console route is a `ConsoleRoute`, so "unauthenticated requests go to the login page" and
"every POST carries the session's CSRF token" hold structurally: a new page cannot forget them.
Only handlers marked `@public` (the login form, the stylesheet and script) skip the session.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy as email_policy
from email.parser import BytesParser
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote

from fastapi import Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy.orm import Session

from models.db import session_scope
from patchflow.errors import NotFoundError, UserError
from patchflow.fleet import Conflict, Forbidden, Unauthorized
from patchflow.ops import accounts
from patchflow.untrusted import http_url
from server.auth import settings_of
from server.console import security, wording

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
HOME = "/console/dashboard"

NAV: tuple[tuple[str, str, str], ...] = (
    ("dashboard", "Dashboard", "/console/dashboard"),
    ("servers", "Patch Management", "/console/servers"),
    ("endpoints", "Endpoints", "/console/endpoints"),
    ("install", "Patch Install", "/console/install"),
    ("policies", "Policies", "/console/policies"),
    ("approvals", "Approvals", "/console/approvals"),
    ("cycle", "Patch Cycle", "/console/cycle"),
    ("reports", "Reports", "/console/reports"),
    ("jobs", "Jobs", "/console/jobs"),
    ("admin", "Admin", "/console/admin"),
)

# Pages: scripts and styles only from the app itself, no framing, no inline script.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

Handler = TypeVar("Handler", bound=Callable[..., Any])


def public(handler: Handler) -> Handler:
    """Mark a console route as reachable without a session (and without the CSRF check)."""
    handler.__console_public__ = True  # type: ignore[attr-defined]
    return handler


def asset(handler: Handler) -> Handler:
    """Mark a public route that serves a file (cacheable, no page headers)."""
    handler.__console_public__ = True  # type: ignore[attr-defined]
    handler.__console_asset__ = True  # type: ignore[attr-defined]
    return handler


class LoginRequired(Exception):
    """No valid session: HTML requests go to the login page, scripts get a 401."""


class CsrfRejected(Exception):
    """A POST without the session's CSRF token."""


# --- templates ---------------------------------------------------------------------------------


def when(value: str | dt.datetime | None) -> str:
    """An instant as people read it on the console: 'YYYY-MM-DD HH:MM UTC'."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return f"{value.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def number(value: int | float | None) -> str:
    return "" if value is None else f"{value:,}"


@lru_cache(maxsize=1)
def static_version() -> str:
    """Changes when the stylesheet or script changes, so browsers never keep a stale copy."""
    digest = hashlib.sha256()
    for path in sorted(STATIC.iterdir()):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = when
    env.filters["number"] = number
    env.filters["plural"] = wording.plural
    env.filters["sentence"] = wording.sentence
    env.filters["web"] = wording.for_web  # a service's CLI-worded line, for the browser
    env.filters["sync_label"] = wording.sync_label
    env.filters["sync_detail"] = wording.sync_detail
    # Every upstream URL put in an href goes through this: only http(s) becomes a link.
    env.filters["http_url"] = http_url
    env.globals["nav_items"] = NAV
    env.globals["static_version"] = static_version()
    return env


@dataclass
class Flash:
    message: str
    kind: str = "ok"  # ok | error | note


def _read_flash(request: Request) -> list[Flash]:
    payload = security.unsign("flash", request.cookies.get(security.FLASH_COOKIE))
    if not payload or not isinstance(payload.get("m"), str):
        return []
    return [Flash(payload["m"], str(payload.get("k", "ok")))]


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page for the logged-in user (or the login page), with any pending flash message."""
    session: security.ConsoleSession | None = getattr(request.state, "console", None)
    flashes = _read_flash(request)
    context.setdefault("nav", "")
    html = environment().get_template(template).render(
        user=session.username if session else None,
        csrf=session.csrf_token if session else "",
        flashes=flashes,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if flashes:
        response.delete_cookie(security.FLASH_COOKIE, path=security.COOKIE_PATH, secure=True,
                               httponly=True, samesite="strict")
    return response


def render_fragment(template: str, **context: Any) -> str:
    """A partial template on its own, for the JSON routes the pages poll."""
    return environment().get_template(template).render(**context)


def redirect(url: str, message: str | None = None, kind: str = "ok") -> RedirectResponse:
    """303 after a POST (the browser then GETs), carrying a one-time message in a cookie."""
    response = RedirectResponse(url, status_code=303)
    if message and kind == "error":
        message = wording.for_web(message)
    if message:
        response.set_cookie(security.FLASH_COOKIE,
                            security.sign("flash", {"m": message[:500], "k": kind}),
                            **security.cookie_options(max_age=60))
    return response


def act(back: str, work: Callable[[], str]) -> RedirectResponse:
    """A button's action: back to the page with the outcome, or with the service's one-line
    refusal as an error message (a button has no field to put it next to)."""
    try:
        message = work()
    except UserError as exc:
        return redirect(back, str(exc), "error")
    return redirect(back, message)


def wants_json(request: Request) -> bool:
    return (request.url.path.endswith(".json")
            or "application/json" in request.headers.get("accept", ""))


def safe_next(target: str | None) -> str:
    """Only a path inside the console: a login link must not redirect anywhere else."""
    if (target and target.startswith("/console/") and not target.startswith("//")
            and "\\" not in target and "\n" not in target and "\r" not in target):
        return target
    return HOME


# --- forms -------------------------------------------------------------------------------------


@dataclass
class Form:
    """An application/x-www-form-urlencoded body (the console posts nothing else)."""

    values: dict[str, list[str]] = field(default_factory=dict)
    # multipart/form-data uploads (the backup page): field name → (file name, bytes)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    @classmethod
    def parse_multipart(cls, body: bytes, content_type: str) -> Form:
        """A multipart/form-data body (a file upload), read with the standard library's MIME
        parser; the body size is already bounded by the server's request limit."""
        message = BytesParser(policy=email_policy.HTTP).parsebytes(
            b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body)
        if not message.is_multipart():
            raise UserError("the upload was not sent as multipart/form-data")
        form = cls()
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str):
                continue
            payload = part.get_payload(decode=True) or b""
            filename = part.get_filename()
            if filename is not None:
                form.files[name] = (filename, payload)
                continue
            try:
                form.values.setdefault(name, []).append(payload.decode("utf-8"))
            except UnicodeDecodeError:
                raise UserError("the form was not sent as UTF-8") from None
        return form

    @classmethod
    def parse(cls, body: bytes) -> Form:
        values: dict[str, list[str]] = {}
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError("the form was not sent as UTF-8") from None
        for key, value in parse_qsl(text, keep_blank_values=True, max_num_fields=20_000):
            values.setdefault(key, []).append(value)
        return cls(values)

    def get(self, name: str, default: str = "") -> str:
        found = self.values.get(name)
        return found[0].strip() if found else default

    def raw(self, name: str) -> str | None:
        """The value as sent (passwords: no trimming), None when the field is absent."""
        found = self.values.get(name)
        return found[0] if found else None

    def getlist(self, name: str) -> list[str]:
        return [v.strip() for v in self.values.get(name, []) if v.strip()]

    def flag(self, name: str) -> bool:
        return self.get(name).lower() in ("on", "yes", "true", "1")

    def optional(self, name: str) -> str | None:
        """'' → None: an empty optional field means 'not set'."""
        return self.get(name) or None


def form_of(request: Request) -> Form:
    form: Form = getattr(request.state, "form", None) or Form()
    return form


FieldRules = Sequence[tuple[str, str]]


def field_errors(exc: UserError, rules: FieldRules) -> dict[str, str]:
    """Put a service's one-line error next to the field it is about.

    The services raise one line naming the value or option at fault ("invalid port 70000",
    "--proxy-user needs --proxy"); `rules` are (field, regex) pairs tried in order, and an error
    no rule claims is shown above the form."""
    message = str(exc)
    shown = wording.for_web(message)
    for name, pattern in rules:
        if re.search(pattern, message, re.IGNORECASE):
            return {name: shown}
    return {"_form": shown}


# --- requests ----------------------------------------------------------------------------------


def database_url(request: Request) -> str:
    return settings_of(request).database_url


@contextmanager
def db(request: Request) -> Iterator[Session]:
    """A transaction the page opens around the step it is for, rather than server.deps'
    SessionDep: ConsoleRoute turns a UserError into a page before the route's dependencies
    exit, so a session held for the whole request would see no error and commit what the
    failed step had written. Pages catch a step's error to show it next to the form."""
    with session_scope(database_url(request)) as session:
        yield session


def user_of(request: Request) -> str:
    session: security.ConsoleSession = request.state.console
    return session.username


def _authenticate(request: Request) -> security.ConsoleSession:
    session = security.read_session(request.cookies.get(security.SESSION_COOKIE))
    if session is None:
        raise LoginRequired
    with db(request) as dbs:
        epoch = accounts.session_epoch(dbs, session.username)
        if not security.is_current(session, epoch) or security.is_logged_out(dbs, session.sid):
            raise LoginRequired
    return session


def _status_of(exc: UserError) -> int:
    for kind, status in ((Unauthorized, 401), (Forbidden, 403), (NotFoundError, 404),
                         (Conflict, 409)):
        if isinstance(exc, kind):
            return status
    return 400


def _login_redirect(request: Request) -> Response:
    if wants_json(request):
        return JSONResponse({"error": "login required"}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.method != "GET":
        target = HOME
    return RedirectResponse(f"/console/login?next={quote(safe_next(target), safe='')}",
                            status_code=303)


def _secure(response: Response, page: bool = True) -> Response:
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "same-origin")
    headers.setdefault("X-Frame-Options", "DENY")
    if page:
        headers.setdefault("Content-Security-Policy", PAGE_CSP)
        headers.setdefault("Cache-Control", "no-store")
    return response


class ConsoleRoute(APIRoute):
    """Session check, CSRF check on POST, HTML error pages and security headers, around every
    console handler."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()
        is_public = getattr(self.endpoint, "__console_public__", False)
        is_asset = getattr(self.endpoint, "__console_asset__", False)

        async def handler(request: Request) -> Response:
            try:
                if request.method == "POST":
                    kind = request.headers.get("content-type", "")
                    body = await request.body()
                    request.state.form = (Form.parse_multipart(body, kind)
                                          if kind.startswith("multipart/form-data")
                                          else Form.parse(body))
                if not is_public:
                    request.state.console = await run_in_threadpool(_authenticate, request)
                    if request.method == "POST":
                        token = (request.state.form.raw("csrf_token")
                                 or request.headers.get("x-csrf-token"))
                        if not security.csrf_ok(request.state.console.csrf_token, token):
                            raise CsrfRejected
                response = await original(request)
            except LoginRequired:
                return _secure(_login_redirect(request))
            except CsrfRejected:
                return _secure(_error(request, 403, "The form's security token is missing or "
                                      "stale: reload the page and try again."))
            except UserError as exc:
                return _secure(_error(request, _status_of(exc), str(exc)))
            return _secure(response, page=not is_asset)

        return handler


def _error(request: Request, status: int, message: str) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return render(request, "error.html", status=status, title="Error",
                  message=wording.for_web(message), status_code=status)
