"""Logging in and out, the console's entry redirect, and its stylesheet and script."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse

from patchflow.errors import NotFoundError
from patchflow.ops import accounts, audit
from server.auth import client_ip, settings_of
from server.console import security
from server.console.core import (
    HOME,
    STATIC,
    ConsoleRoute,
    asset,
    db,
    form_of,
    public,
    redirect,
    render,
    safe_next,
)
from server.ratelimit import FailureLimiter, subject_of

router = APIRouter(route_class=ConsoleRoute)

# Failed logins per (client address, user name) per minute before answering 429: slows password
# guessing down to a crawl without locking the real administrator out for long, nor every
# other administrator behind the same NAT.
LOGIN_FAILURES_PER_MINUTE = 10
_limiter = FailureLimiter("login", LOGIN_FAILURES_PER_MINUTE)
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".svg": "image/svg+xml", ".ico": "image/x-icon"}


def login_limiter() -> FailureLimiter:
    return _limiter


def _login_page(request: Request, status: int = 200, error: str | None = None,
                username: str = "", next_url: str = HOME) -> Response:
    nonce, token = security.login_nonce()
    response = render(request, "login.html", status=status, title="Log in", error=error,
                      username=username, next_url=next_url, login_token=token)
    response.set_cookie(security.LOGIN_COOKIE, nonce, **security.cookie_options(max_age=3600))
    return response


@router.get("")
@public
def console_root() -> Response:
    return RedirectResponse(HOME, status_code=303)


@router.get("/login")
@public
def login_form(request: Request, next: str | None = None) -> Response:
    return _login_page(request, next_url=safe_next(next))


@router.post("/login")
@public
async def login(request: Request) -> Response:
    form = form_of(request)
    username = form.get("username")
    next_url = safe_next(form.get("next"))
    address = client_ip(request) or "unknown"
    database_url = settings_of(request).database_url
    subject = subject_of((username or "").casefold())
    wait = await run_in_threadpool(_limiter.retry_after, database_url, address, subject)
    if wait:
        response = _login_page(request, 429, f"Too many failed logins: try again in {wait} s.",
                               username, next_url)
        response.headers["Retry-After"] = str(wait)
        return response
    if not security.login_token_ok(request.cookies.get(security.LOGIN_COOKIE),
                                   form.raw("login_token")):
        return _login_page(request, 403, "The login form expired or came from elsewhere: "
                           "log in again.", username, next_url)
    password = form.raw("password") or ""

    def check() -> str | None:
        with db(request) as session:
            epoch = accounts.login(session, username, password)
            if epoch is not None:
                audit.record(session, username, "login", None, f"from {address}")
            return epoch

    def refused() -> None:
        with db(request) as session:
            audit.record(session, username or "(no name)", "login.refused", None,
                         f"from {address}")

    epoch = await run_in_threadpool(check)
    if epoch is None:
        await run_in_threadpool(_limiter.record_failure, database_url, address, subject)
        await run_in_threadpool(refused)
        return _login_page(request, 401, "Wrong user name or password.", username, next_url)
    _session, cookie = security.new_session(username, epoch)
    response = redirect(next_url)
    response.set_cookie(security.SESSION_COOKIE, cookie, **security.cookie_options())
    response.delete_cookie(security.LOGIN_COOKIE, path=security.COOKIE_PATH, secure=True,
                           httponly=True, samesite="strict")
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    with db(request) as session:
        security.revoke(session, request.state.console)
        audit.record(session, request.state.console.username, "logout")
    response = redirect("/console/login", "You are logged out.")
    response.delete_cookie(security.SESSION_COOKIE, path=security.COOKIE_PATH, secure=True,
                           httponly=True, samesite="strict")
    return response


def _static(name: str) -> Response:
    path = STATIC / name
    if "/" in name or path.suffix not in _STATIC_TYPES or not path.is_file():
        raise NotFoundError(f"no console file {name!r}")
    return FileResponse(path, media_type=_STATIC_TYPES[path.suffix],
                        headers={"Cache-Control": "public, max-age=86400"})


@router.get("/static/{name}")
@asset
def static(name: str) -> Response:
    """The console's own stylesheet and script (nothing from a CDN: it works air-gapped)."""
    return _static(name)


favicon_router = APIRouter(route_class=ConsoleRoute)


@favicon_router.get("/favicon.ico")
@asset
def favicon() -> Response:
    """Browsers ask for /favicon.ico on every page; without it every page logs a 404."""
    return _static("favicon.svg")
