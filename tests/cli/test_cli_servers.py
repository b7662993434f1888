"""Patch server CLI on SQLite and MariaDB: the user-facing contract of `patchflow server`."""

from __future__ import annotations

import json
from pathlib import Path


def test_init_is_idempotent(cli, home: Path) -> None:
    first = cli("init")
    assert first.code == 0, first.err
    assert (home / "secret.key").exists()
    second = cli("init")
    assert second.code == 0, second.err
    assert "up to date" in second.out


def test_add_list_edit_delete(cli, home: Path, tmp_path: Path) -> None:
    assert cli("init").code == 0
    mirror = tmp_path / "msrc"
    mirror.mkdir()
    r = cli("server", "add", "local", "--host", "patch.corp.example", "--msrc-source", str(mirror),
            "--winget-source", "none")
    assert r.code == 0, r.err
    r = cli("server", "add", "branch", "--host", "10.1.2.3", "--port", "7443",
            "--upstream", "server:local")
    assert r.code == 0, r.err
    r = cli("server", "list", "--json")
    rows = json.loads(r.out)
    assert [row["name"] for row in rows] == ["branch", "local"]
    local = rows[1]
    assert local["port"] == 6201
    assert local["sync_status"] == "Never"
    assert local["msrc_source"] == str(mirror.resolve())
    assert local["winget_source"] == "none"
    assert "7zip.7zip" in local["winget_packages"]
    assert rows[0]["upstream"] == "server:local"
    # Sorting by host puts the IP first.
    r = cli("server", "list", "--sort", "host", "--json")
    assert [row["name"] for row in json.loads(r.out)] == ["branch", "local"]

    r = cli("server", "edit", "branch", "--port", "6202")
    assert r.code == 0, r.err
    # local is branch's upstream: refuse to delete it.
    r = cli("server", "delete", "local", "--yes")
    assert r.code == 2 and "upstream of branch" in r.err
    assert cli("server", "delete", "branch").code == 2  # needs --yes
    assert cli("server", "delete", "branch", "--yes").code == 0
    assert [row["name"] for row in json.loads(cli("server", "list", "--json").out)] == ["local"]


def test_bad_input_is_one_line_and_stores_nothing(cli, home: Path) -> None:
    assert cli("init").code == 0
    cases = [
        (["server", "add", "bad name", "--host", "h"], "invalid patch server name"),
        (["server", "add", "s1", "--host", "h", "--port", "70000"], "invalid port"),
        (["server", "add", "s1", "--host", "h", "--upstream", "ftp"], "invalid upstream"),
        (["server", "add", "s1", "--host", "h", "--upstream", "wsus"], "needs --wsus-url"),
        (["server", "add", "s1", "--host", "h", "--upstream", "server:nope"], "does not exist"),
        (["server", "add", "s1", "--host", "h", "--msrc-source", "/no/such/dir"], "no such"),
        (["server", "add", "s1", "--host", "h", "--proxy", "notaurl"], "invalid proxy"),
        (["server", "add", "s1"], "--host is required"),
        (["server", "edit", "ghost", "--port", "1"], "no patch server named"),
    ]
    for args, message in cases:
        r = cli(*args)
        assert r.code == 2, (args, r.out, r.err)
        assert message in r.err
        assert len(r.err.strip().splitlines()) == 1
        assert "Traceback" not in r.err
    assert json.loads(cli("server", "list", "--json").out) == []


def test_proxy_password_is_encrypted_never_printed(
    cli, home: Path, db_url: str, monkeypatch
) -> None:
    import sqlalchemy as sa

    assert cli("init").code == 0
    monkeypatch.setenv("PATCHFLOW_PROXY_PASSWORD", "s3cr3t-P@ss")
    r = cli("server", "add", "px", "--host", "h", "--proxy", "http://proxy.corp:3128",
            "--proxy-user", "svc-patch")
    assert r.code == 0, r.err
    listing = cli("server", "list", "--json")
    assert "s3cr3t" not in listing.out
    assert json.loads(listing.out)[0]["proxy_password_set"] is True
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT proxy_password_enc FROM patch_servers")).scalar()
    engine.dispose()
    assert stored and "s3cr3t" not in stored

    from models.db import session_scope
    from patchflow.catalog import servers

    with session_scope() as session:
        proxies = servers.proxies_of(servers.get_server(session, "px"))
    assert proxies == {"http": "http://svc-patch:s3cr3t-P%40ss@proxy.corp:3128",
                       "https": "http://svc-patch:s3cr3t-P%40ss@proxy.corp:3128"}


def test_filters_and_schedule(cli, home: Path) -> None:
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h").code == 0
    r = cli("server", "filters", "local", "--categories", "Security Updates,Critical Updates",
            "--languages", "en-US,de-DE")
    assert r.code == 0, r.err
    data = json.loads(cli("server", "list", "--json").out)[0]
    assert data["filters"] == {"categories": ["Security Updates", "Critical Updates"],
                               "languages": ["en-US", "de-DE"], "products": None}
    assert cli("server", "filters", "local", "--categories", "all").code == 0
    data = json.loads(cli("server", "list", "--json").out)[0]
    assert data["filters"]["categories"] is None
    r = cli("server", "filters", "local", "--categories", "Bogus")
    assert r.code == 2 and "unknown category" in r.err

    r = cli("server", "schedule", "local", "--frequency", "monthly", "--weekday", "tuesday",
            "--at", "22:00", "--week-of-month", "2")
    assert r.code == 0, r.err
    data = json.loads(cli("server", "list", "--json").out)[0]
    assert data["schedule"] == {"frequency": "monthly", "weekday": "tuesday", "at": "22:00",
                                "week_of_month": 2}
    r = cli("server", "schedule", "local", "--frequency", "weekly", "--weekday", "funday",
            "--at", "22:00")
    assert r.code == 2 and "invalid weekday" in r.err
    r = cli("server", "schedule", "local", "--frequency", "weekly", "--weekday", "monday",
            "--at", "25:00")
    assert r.code == 2 and "invalid time" in r.err


def test_commands_refuse_uninitialised_database(
    cli, sqlite_home: Path, monkeypatch, tmp_path
) -> None:
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    r = cli("server", "list")
    assert r.code == 2 and "patchflow init" in r.err
    # Refusing must not create the database file (nor its folder) it looked for.
    assert not (tmp_path / "empty.db").exists()
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}")
    r = cli("server", "list")
    assert r.code == 2 and "patchflow init" in r.err
    assert not (tmp_path / "nowhere").exists()
