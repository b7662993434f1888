"""Console accounts against the real console over HTTPS, on SQLite and MariaDB: a password
change or an administrator's removal ends every session of that account for good, passwords
are Argon2id hashes that carry their parameters and old scrypt hashes are upgraded at the next
login, and an upstream's non-http(s) URL is no link."""

from __future__ import annotations

import base64
import hashlib
import io
import re
import secrets

import httpx
import pytest
import sqlalchemy as sa

from tests.fixtures.agent.harness import Api
from tests.fixtures.console import (  # noqa: F401 (console_api, console_server: the fixtures)
    PASSWORD,
    add_admin,
    console_api,
    console_server,
    csrf_of,
    log_in,
)

NEW_PASSWORD = "another long password"


def _cookie(response: httpx.Response) -> str:
    for header in response.headers.get_list("set-cookie"):
        if header.startswith("patchflow_console="):
            return header.split(";", 1)[0].split("=", 1)[1]
    raise AssertionError(response.headers)


def _logged_in(api: Api, cookie: str) -> bool:
    """Whether a fresh browser holding only this cookie is let into the console."""
    with api.client() as http:
        http.cookies.set("patchflow_console", cookie, path="/console")
        page = http.get("/console/dashboard")
        data = http.get("/console/jobs.json")
    assert page.status_code in (200, 303) and data.status_code in (200, 401)
    assert (page.status_code == 200) == (data.status_code == 200)
    return page.status_code == 200


def _stored_hash(api: Api, user: str = "alice") -> str:
    from models.db import get_engine

    with get_engine(api.db_url).connect() as conn:
        return str(conn.execute(sa.text("SELECT password_hash FROM admin_users WHERE "
                                        "username = :u"), {"u": user}).scalar_one())


def test_password_change_ends_every_session(api: Api, cli,  # type: ignore[no-untyped-def]
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert add_admin(cli, monkeypatch).code == 0
    assert add_admin(cli, monkeypatch, "bob").code == 0
    with api.client() as laptop, api.client() as desktop, api.client() as other:
        assert log_in(laptop).status_code == 303
        assert log_in(desktop).status_code == 303
        assert log_in(other, "bob").status_code == 303
        copied = laptop.cookies.get("patchflow_console", path="/console")
        assert laptop.get("/console/dashboard").status_code == 200
        assert _logged_in(api, copied)

        monkeypatch.setattr("sys.stdin", io.StringIO(NEW_PASSWORD + "\n"))
        assert cli("admin", "passwd", "alice", "--password-stdin").code == 0

        # Every session of alice ends, wherever it was opened, and a copied cookie with it.
        for http in (laptop, desktop):
            page = http.get("/console/dashboard")
            assert page.status_code == 303 and page.headers["location"].startswith(
                "/console/login")
            assert http.get("/console/jobs.json").status_code == 401
        assert not _logged_in(api, copied)
        # Bob's session is not alice's business.
        assert other.get("/console/dashboard").status_code == 200
        # The new password opens a new session; the old one does not.
        assert log_in(laptop).status_code == 401
        fresh = log_in(laptop, password=NEW_PASSWORD)
        assert fresh.status_code == 303
        assert laptop.get("/console/dashboard").status_code == 200
        assert not _logged_in(api, copied)


def test_removed_admin_recreated_gets_none_of_the_old_sessions(
        api: Api, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    assert add_admin(cli, monkeypatch).code == 0
    with api.client() as http:
        cookie = _cookie(log_in(http))
    assert _logged_in(api, cookie)
    assert cli("admin", "remove", "alice").code == 0
    assert not _logged_in(api, cookie)
    # The same name and even the same password again: still a different account.
    assert add_admin(cli, monkeypatch).code == 0
    assert not _logged_in(api, cookie)
    with api.client() as http:
        assert log_in(http).status_code == 303
        assert http.get("/console/dashboard").status_code == 200


def test_cookie_without_epoch_is_no_session(api: Api, cli,  # type: ignore[no-untyped-def]
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A cookie signed before epochs existed (or with a forged epoch) opens nothing."""
    from server.console import security

    assert add_admin(cli, monkeypatch).code == 0
    monkeypatch.setenv("PATCHFLOW_HOME", str(api.home))
    old_style = security.sign("session", {"u": "alice", "sid": "s", "iat": 0,
                                          "exp": 4102444800})
    assert not _logged_in(api, old_style)
    _session, guessed = security.new_session("alice", "0" * 32)
    assert not _logged_in(api, guessed)


def _legacy_scrypt(password: str) -> str:
    """A hash exactly as patchflow made them before Argon2id (scrypt N=2^14, r=8, p=1)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def test_argon2id_with_parameters_and_scrypt_upgraded_at_login(
        api: Api, cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from models.db import get_engine

    assert add_admin(cli, monkeypatch).code == 0
    stored = _stored_hash(api)
    assert stored.startswith("$argon2id$v=19$m=") and ",t=" in stored and ",p=" in stored
    assert PASSWORD not in stored

    legacy = _legacy_scrypt(PASSWORD)
    with get_engine(api.db_url).begin() as conn:
        conn.execute(sa.text("UPDATE admin_users SET password_hash = :h WHERE username = 'alice'"),
                     {"h": legacy})
    with api.client() as http:
        assert log_in(http, password="wrong password!").status_code == 401
    assert _stored_hash(api) == legacy  # a failed login changes nothing
    with api.client() as http:
        assert log_in(http).status_code == 303  # the old hash still works ...
        assert http.get("/console/dashboard").status_code == 200
    upgraded = _stored_hash(api)
    assert upgraded.startswith("$argon2id$")  # ... and is replaced at that login
    from patchflow import crypto

    assert crypto.verify_password(PASSWORD, upgraded)
    assert not crypto.password_needs_rehash(upgraded)
    with api.client() as http:
        assert log_in(http).status_code == 303
        assert log_in(http, password="wrong password!").status_code == 401
    assert _stored_hash(api) == upgraded  # an up-to-date hash is left alone


def test_upstream_urls_link_only_over_http(api: Api, cli,  # type: ignore[no-untyped-def]
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from models import Patch
    from models.db import session_scope

    with session_scope(api.db_url) as session:
        bad = Patch(source="winget", ukey="evil", package_id="Evil.App", version="1.0",
                    title="Evil App", vendor="Evil", category="Applications",
                    severity="Critical", restart_required="Not Required", eula_required=True,
                    info_url="javascript:alert(document.cookie)",
                    eula_url=" JavaScript:alert(1)")
        good = Patch(source="winget", ukey="good", package_id="Good.App", version="1.0",
                     title="Good App", vendor="Good", category="Applications",
                     severity="Critical", restart_required="Not Required", eula_required=True,
                     info_url="https://vendor.example/info", eula_url="http://vendor.example/e")
        session.add_all([bad, good])
        session.flush()
        bad_id, good_id = bad.id, good.id
    assert add_admin(cli, monkeypatch).code == 0
    with api.client() as http:
        assert log_in(http).status_code == 303
        page = http.get(f"/console/patches/{bad_id}")
        assert page.status_code == 200
        assert not re.search(r'href="\s*javascript', page.text, re.IGNORECASE)
        assert "javascript:alert(document.cookie)" in page.text  # shown, as text
        assert "JavaScript:alert(1)" in page.text
        page = http.get(f"/console/patches/{good_id}")
        assert 'href="https://vendor.example/info"' in page.text
        assert 'href="http://vendor.example/e"' in page.text


def test_migration_gives_existing_admins_an_epoch_each(bare_url: str) -> None:
    """0006 on a database that already has administrators, on SQLite and MariaDB."""
    from models.db import get_engine
    from models.migrate import upgrade
    from tests.support.migrations import migrate

    migrate(bare_url, "0005_auth_failures")
    with get_engine(bare_url).begin() as conn:
        for user in ("alice", "bob"):
            conn.execute(sa.text(
                "INSERT INTO admin_users (username, password_hash, created_at) "
                "VALUES (:u, :h, :t)"), {"u": user, "h": _legacy_scrypt(PASSWORD),
                                         "t": "2026-01-01 00:00:00"})
    upgrade(bare_url)
    with get_engine(bare_url).connect() as conn:
        epochs = [r[0] for r in conn.execute(sa.text(
            "SELECT session_epoch FROM admin_users ORDER BY username"))]
    assert len(epochs) == 2 and all(len(e) == 32 for e in epochs)
    assert epochs[0] != epochs[1]


def test_proxy_credentials_refused_by_console_and_api(api: Api, cli,  # type: ignore[no-untyped-def]
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Proxy credentials refused, and cleared with the proxy, through the other two doors (the
    CLI's in test_server_proxy)."""

    assert add_admin(cli, monkeypatch).code == 0
    with api.client(headers={"Authorization": f"Bearer {api.admin_token()}"}) as admin:
        refused = admin.post("/api/v1/admin/servers", json={
            "name": "local", "host": "h", "proxy": "http://svc:hunter2-pw@proxy.corp:3128"})
        assert 400 <= refused.status_code < 500 and "credentials" in refused.text
        assert "hunter2" not in refused.text
        assert admin.post("/api/v1/admin/servers", json={
            "name": "local", "host": "h", "winget_source": "none",
            "proxy": "http://proxy.corp:3128", "proxy_user": "svc",
            "proxy_password": "s3cret-pw"}).status_code == 201
    with api.client() as http:
        assert log_in(http).status_code == 303
        csrf = csrf_of(http.get("/console/dashboard").text)
        edit = http.post("/console/servers/local/edit", data={
            "csrf_token": csrf, "host": "h", "upstream": "microsoft",
            "proxy": "http://svc:hunter2-pw@proxy.corp:3128", "proxy_user": "svc"})
        assert edit.status_code == 400
        assert re.search(r'id="err-proxy"[^>]*>Invalid proxy', edit.text)
        assert "must not hold credentials" in edit.text
        # Emptying the proxy fields in the console drops the stored password too.
        done = http.post("/console/servers/local/edit", data={
            "csrf_token": csrf, "host": "h", "upstream": "microsoft", "proxy": "",
            "proxy_user": ""})
        assert done.status_code == 303, done.text[:500]
    from models.db import get_engine

    with get_engine(api.db_url).connect() as conn:
        row = conn.execute(sa.text("SELECT proxy_url, proxy_user, proxy_password_enc "
                                   "FROM patch_servers")).one()
    assert tuple(row) == (None, None, None)
