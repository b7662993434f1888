"""A patch server's proxy, on SQLite and MariaDB: credentials inside the proxy URL are refused
whichever door they come through, and clearing the proxy clears its credentials, the encrypted
password included. The console and the admin API doors are
driven over HTTPS in test_console_sessions.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from models.db import session_scope
from patchflow.catalog import servers
from patchflow.errors import UserError

SECRET = "s3cr3t-P@ss"


def _row(db_url: str) -> dict[str, object]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text(
                "SELECT proxy_url, proxy_user, proxy_password_enc FROM patch_servers")).one()
    finally:
        engine.dispose()
    return dict(row._mapping)


def test_credentials_in_the_proxy_url_are_refused(cli, home: Path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    assert cli("init").code == 0
    for url in ("http://svc:hunter2-pw@proxy.corp:3128", "http://svc@proxy.corp:3128",
                "https://:hunter2-pw@proxy.corp"):
        r = cli("server", "add", "px", "--host", "h", "--proxy", url)
        assert r.code == 2, r.err
        assert "must not hold credentials" in r.err and "--proxy-user" in r.err
        assert "hunter2" not in r.err and "svc" not in r.err  # the error repeats no secret
    assert cli("server", "list", "--json").out.strip() == "[]"

    assert cli("server", "add", "px", "--host", "h", "--proxy", "http://proxy.corp:3128").code == 0
    r = cli("server", "edit", "px", "--proxy", "http://svc:hunter2-pw@proxy.corp:3128")
    assert r.code == 2 and "must not hold credentials" in r.err
    assert _row(db_url)["proxy_url"] == "http://proxy.corp:3128"
    with pytest.raises(UserError, match="must not hold"), session_scope() as session:
        servers.edit_server(session, "px", servers.ServerOptions(
            proxy="http://svc:hunter2-pw@proxy.corp:3128"))


def test_clearing_the_proxy_clears_its_credentials(cli, home: Path, db_url: str,  # type: ignore[no-untyped-def]
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("init").code == 0
    monkeypatch.setenv("PATCHFLOW_PROXY_PASSWORD", SECRET)
    assert cli("server", "add", "px", "--host", "h", "--proxy", "http://proxy.corp:3128",
               "--proxy-user", "svc").code == 0
    assert _row(db_url)["proxy_password_enc"]

    r = cli("server", "edit", "px", "--proxy", "")
    assert r.code == 0, r.err
    assert _row(db_url) == {"proxy_url": None, "proxy_user": None, "proxy_password_enc": None}
    listed = json.loads(cli("server", "list", "--json").out)[0]
    assert (listed["proxy"], listed["proxy_user"], listed["proxy_password_set"]) == \
        (None, None, False)
    with session_scope() as session:
        assert servers.proxies_of(servers.get_server(session, "px")) is None

    # Setting the proxy again does not bring the old password back.
    assert cli("server", "edit", "px", "--proxy", "http://proxy.corp:3128").code == 0
    assert _row(db_url)["proxy_password_enc"] is None

    # Clearing only the user drops the password too; a password needs a user and a proxy.
    assert cli("server", "edit", "px", "--proxy-user", "svc").code == 0
    assert _row(db_url)["proxy_password_enc"]
    with session_scope() as session:
        servers.edit_server(session, "px", servers.ServerOptions(proxy_user=""))
    assert _row(db_url) == {"proxy_url": "http://proxy.corp:3128", "proxy_user": None,
                            "proxy_password_enc": None}
    with pytest.raises(UserError, match="needs a proxy user"), session_scope() as session:
        servers.edit_server(session, "px", servers.ServerOptions(proxy_password=SECRET))
    with pytest.raises(UserError, match="needs --proxy"), session_scope() as session:
        servers.edit_server(session, "px", servers.ServerOptions(proxy="", proxy_user="svc"))
    assert _row(db_url)["proxy_url"] == "http://proxy.corp:3128"


def test_credentials_stored_before_are_masked(cli, home: Path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """A proxy URL with credentials saved by an older version is never shown in clear."""
    assert cli("init").code == 0
    assert cli("server", "add", "px", "--host", "h").code == 0
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE patch_servers SET proxy_url = :u"),
                     {"u": "http://svc:hunter2-pw@proxy.corp:3128"})
    engine.dispose()
    r = cli("server", "list", "--json")
    assert r.code == 0 and "hunter2" not in r.out
    assert json.loads(r.out)[0]["proxy"] == "http://***@proxy.corp:3128"
    with session_scope() as session:  # still used as configured until it is changed
        proxies = servers.proxies_of(servers.get_server(session, "px"))
    assert proxies == {"http": "http://svc:hunter2-pw@proxy.corp:3128",
                       "https": "http://svc:hunter2-pw@proxy.corp:3128"}
