"""The web console's doors, over real HTTPS on SQLite and MariaDB: `patchflow admin add`, login
and logout, the cookie's flags, CSRF on every POST, redirects for unauthenticated pages, and
errors shown next to the field. The pages themselves are driven in a real browser in
test_console_browser.py."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

from tests.fixtures.agent.harness import Api
from tests.fixtures.console import (  # noqa: F401 (console_api, console_server: the fixtures)
    PASSWORD,
    add_admin,
    console_api,
    console_server,
    csrf_of,
    log_in,
)


def test_admin_add_cli(api: Api, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    r = add_admin(cli, monkeypatch)
    assert r.code == 0, r.err
    assert "added administrator alice" in r.out
    r = add_admin(cli, monkeypatch)
    assert r.code == 2 and "already exists" in r.err
    r = add_admin(cli, monkeypatch, "bob", "short")
    assert r.code == 2 and "too short" in r.err
    r = add_admin(cli, monkeypatch, "bad name!", PASSWORD)
    assert r.code == 2 and "invalid user name" in r.err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    r = cli("admin", "add", "carol", "--password-stdin")
    assert r.code == 2 and "standard input is empty" in r.err
    r = cli("admin", "list", "--json")
    assert r.code == 0 and '"username": "alice"' in r.out
    import sqlalchemy as sa

    from models.db import get_engine

    with get_engine(api.db_url).connect() as conn:
        stored = conn.execute(sa.text("SELECT password_hash FROM admin_users")).scalar_one()
    assert stored.startswith("$argon2id$") and PASSWORD not in stored

    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    assert cli("admin", "passwd", "alice", "--password-stdin").code == 0
    with api.client() as http:
        assert log_in(http).status_code == 401
        assert log_in(http, password="another long password").status_code == 303
    assert cli("admin", "remove", "alice").code == 0
    assert cli("admin", "remove", "alice").code == 2


def test_unauthenticated_requests_are_refused(api: Api) -> None:
    with api.client() as http:
        page = http.get("/console/servers?sort=host")
        assert page.status_code == 303
        assert page.headers["location"] == "/console/login?next=%2Fconsole%2Fservers%3Fsort%3Dhost"
        assert http.get("/console/jobs.json").status_code == 401
        assert http.get("/console/servers.json").json() == {"error": "login required"}
        posted = http.post("/console/servers/new", data={"name": "x", "host": "h"})
        assert posted.status_code == 303 and posted.headers["location"].startswith(
            "/console/login")
        # A forged cookie is no session.
        http.cookies.set("patchflow_console", "eyJ1IjoiYWxpY2UifQ.forged", path="/console")
        assert http.get("/console/dashboard").status_code == 303
        # The API keeps its own token auth.
        assert http.get("/api/v1/admin/servers").status_code == 401
        login = http.get("/console/login")
        assert login.status_code == 200 and "Log in" in login.text
        assert http.get("/console/static/console.css").status_code == 200
        assert http.get("/console/static/..%2Fcore.py").status_code == 404
    assert api.count("patch_servers") == 0


def test_login_logout_and_cookie_flags(api: Api, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    assert add_admin(cli, monkeypatch).code == 0
    with api.client() as http:
        wrong = log_in(http, password="wrong password!")
        assert wrong.status_code == 401
        assert "Wrong user name or password" in wrong.text
        assert "patchflow_console" not in wrong.headers.get("set-cookie", "")
        unknown = log_in(http, user="mallory")
        assert unknown.status_code == 401
        # The login form itself needs its token (login CSRF).
        bare = http.post("/console/login", data={"username": "alice", "password": PASSWORD})
        assert bare.status_code == 403

        ok = log_in(http, next_url="/console/servers")
        assert ok.status_code == 303 and ok.headers["location"] == "/console/servers"
        cookie = next(c for c in ok.headers.get_list("set-cookie")
                      if c.startswith("patchflow_console="))
        flags = {part.strip().lower() for part in cookie.split(";")}
        assert {"secure", "httponly", "samesite=strict", "path=/console"} <= flags
        page = http.get("/console/servers")
        assert page.status_code == 200 and "Patch Management" in page.text
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        # An open redirect through ?next= is not possible.
        assert log_in(http, next_url="https://evil.example/").headers["location"] == \
            "/console/dashboard"

        # That second login is a new session: the first page's token no longer fits.
        assert http.post("/console/logout", data={"csrf_token": csrf_of(page.text)}
                         ).status_code == 403
        stolen = http.cookies.get("patchflow_console")
        csrf = csrf_of(http.get("/console/dashboard").text)
        assert http.post("/console/logout", data={"csrf_token": csrf}).status_code == 303
        assert http.get("/console/dashboard").status_code == 303
    with api.client() as other:
        # The cookie copied before logout is dead too.
        other.cookies.set("patchflow_console", stolen, path="/console")
        assert other.get("/console/dashboard").status_code == 303


def test_every_post_needs_the_csrf_token(api: Api, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    assert add_admin(cli, monkeypatch).code == 0
    with api.client() as http:
        log_in(http)
        csrf = csrf_of(http.get("/console/dashboard").text)
        body = {"name": "local", "host": "patch.corp.example", "port": "6201"}
        missing = http.post("/console/servers/new", data=body)
        assert missing.status_code == 403
        assert "security token" in missing.text
        wrong = http.post("/console/servers/new", data={**body, "csrf_token": csrf[:-2] + "xx"})
        assert wrong.status_code == 403
        assert http.post("/console/logout").status_code == 403
        assert api.count("patch_servers") == 0
        # The header form (what the page's script sends) is accepted as well.
        added = http.post("/console/servers/new", data=body, headers={"X-CSRF-Token": csrf})
        assert added.status_code == 303
        assert added.headers["location"] == "/console/servers/local/edit"
        assert api.count("patch_servers") == 1


def test_form_errors_are_shown_next_to_the_field(api: Api, cli,  # type: ignore[no-untyped-def]
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert add_admin(cli, monkeypatch).code == 0
    with api.client() as http:
        log_in(http)
        csrf = csrf_of(http.get("/console/servers/new").text)
        page = http.post("/console/servers/new", data={"csrf_token": csrf, "name": "local",
                                                       "host": "patch.corp.example",
                                                       "port": "70000"})
        assert page.status_code == 400
        assert re.search(r'id="f-port"[^>]*aria-invalid="true"', page.text)
        assert re.search(r'id="err-port"[^>]*>Invalid port 70000', page.text)
        page = http.post("/console/servers/new", data={"csrf_token": csrf, "name": "local",
                                                       "host": "bad host!", "port": "6201"})
        assert re.search(r'id="err-host"[^>]*>Invalid host', page.text)
        assert http.post("/console/servers/new", data={
            "csrf_token": csrf, "name": "local", "host": "h", "port": "6201"}).status_code == 303
        edit = http.post("/console/servers/local/edit", data={
            "csrf_token": csrf, "host": "h", "port": "6201", "upstream": "wsus", "wsus_url": "",
            "proxy": "", "proxy_user": ""})
        assert edit.status_code == 400
        assert re.search(r'id="err-wsus_url"[^>]*>Upstream wsus needs WSUS URL', edit.text)
        edit = http.post("/console/servers/local/edit", data={
            "csrf_token": csrf, "host": "h", "upstream": "microsoft", "proxy": "ftp://p",
            "proxy_user": ""})
        assert re.search(r'id="err-proxy"[^>]*>Invalid proxy', edit.text)
        policy = http.post("/console/policies/new", data={
            "csrf_token": csrf, "name": "Workstations", "patch_server": "local",
            "scan_weekday": "tuesday", "scan_at": "25:00", "scan_every_weeks": "1"})
        assert policy.status_code == 400
        assert re.search(r'id="err-scan_at"[^>]*>Invalid time', policy.text)
        # Destructive actions confirm: without the confirmation the server asks first.
        ask = http.post("/console/servers/local/delete", data={"csrf_token": csrf})
        assert ask.status_code == 200 and "Delete patch server local?" in ask.text
        assert api.count("patch_servers") == 1
        gone = http.post("/console/servers/local/delete", data={"csrf_token": csrf,
                                                                "confirmed": "yes"})
        assert gone.status_code == 303 and api.count("patch_servers") == 0
        # Report files are served from their run's folder only.
        assert http.get("/console/reports/1/files/..%2F..%2Fsecret.key").status_code == 404
        assert http.get("/console/patches/999999").status_code == 404


def test_console_key_is_private(api: Api, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    assert add_admin(cli, monkeypatch).code == 0
    with api.client() as http:
        assert log_in(http).status_code == 303
    key = Path(api.home) / "console.key"
    assert key.exists() and key.stat().st_mode & 0o077 == 0


PAGES = ("/console/dashboard", "/console/servers", "/console/servers?sort=status",
         "/console/servers/new", "/console/endpoints", "/console/endpoints?q=none",
         "/console/install", "/console/install?severity=Critical&eula=Accepted",
         "/console/policies", "/console/policies/new", "/console/reports", "/console/jobs",
         "/console/groups", "/console/admin", "/console/admin/audit",
         "/console/admin/audit?action=login", "/console/admin/backup",
         "/console/endpoints?state=Up-to-Date&presence=offline")


def test_every_page_renders_and_buttons_report_refusals(api: Api, cli,  # type: ignore[no-untyped-def]
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    assert add_admin(cli, monkeypatch).code == 0
    with api.client() as http:
        assert log_in(http).status_code == 303
        for path in PAGES:
            page = http.get(path)
            assert page.status_code == 200, (path, page.text[:300])
            assert 'aria-current="page"' in page.text, path
        for path in ("/console/servers.json", "/console/endpoints.json", "/console/jobs.json",
                     "/console/reports/status.json"):
            assert http.get(path).status_code == 200, path
        bad = http.get("/console/install?severity=Urgent")
        assert bad.status_code == 200 and "Unknown severity &#39;Urgent&#39;" in bad.text
        assert http.get("/console/servers/nope/edit").status_code == 404
        assert http.get("/console/jobs/42").status_code == 404
        csrf = csrf_of(http.get("/console/dashboard").text)
        http.post("/console/servers/new", data={"csrf_token": csrf, "name": "local",
                                                "host": "h", "port": "6201"})
        # A button whose action the service refuses comes back with the reason on the page.
        for action, reason in (("/console/servers/local/sync/stop", "is not syncing"),
                               ("/console/endpoints/scan", "Select at least one endpoint"),
                               ("/console/endpoints/scan/stop", "No scan is running"),
                               ("/console/install/start", "The selection is empty")):
            done = http.post(action, data={"csrf_token": csrf})
            assert done.status_code == 303, action
            shown = http.get(done.headers["location"]).text
            assert "flash-error" in shown and reason in shown, action
            # The message is shown once.
            assert "flash-error" not in http.get(done.headers["location"]).text


def test_field_rules_and_redirect_targets() -> None:
    from patchflow.errors import UserError
    from server.console.core import field_errors, safe_next
    from server.console.servers import SERVER_FIELDS

    def field(message: str) -> str:
        return next(iter(field_errors(UserError(message), SERVER_FIELDS)))

    assert field("invalid port 70000: must be between 1 and 65535") == "port"
    assert field("invalid proxy 'http://p:99999': bad port") == "proxy"
    assert field("invalid MSRC source 'https://x:99999': bad port") == "msrc_source"
    assert field("--proxy-user needs --proxy http://host:port") == "proxy_user"
    assert field("--upstream wsus needs --wsus-url https://wsus-host:8531") == "wsus_url"
    assert field("a patch server named 'local' already exists") == "name"
    assert field("something else entirely") == "_form"
    assert safe_next("/console/jobs?x=1") == "/console/jobs?x=1"
    for bad in ("https://evil.example/", "//evil.example/console/", "/api/v1/admin/servers",
                "/console/\r\nSet-Cookie: x", None):
        assert safe_next(bad) == "/console/dashboard"
