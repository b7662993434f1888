"""Groups, policies, enrollment tokens and agentless imports through the CLI, on SQLite and
MariaDB: the user-facing contract of `patchflow endpoints|groups|policies`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent.harness import base_inventory


@pytest.fixture
def ready(cli, home: Path) -> Path:
    assert cli("init", "--host", "localhost").code == 0
    assert cli("server", "add", "local", "--host", "patch.corp", "--winget-source",
               "none").code == 0
    return home


def _json(cli, *args: str) -> Any:
    result = cli(*args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def _write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _fails(result, message: str) -> None:  # type: ignore[no-untyped-def]
    assert result.code == 2, (result.out, result.err)
    assert message in result.err, result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err


def test_nested_groups_and_the_nearest_policy(cli, ready: Path, tmp_path: Path) -> None:
    for args in (("groups", "add", "Corp"), ("groups", "add", "Berlin", "--parent", "Corp"),
                 ("groups", "add", "Berlin Lab", "--parent", "Berlin"),
                 ("groups", "add", "Munich", "--parent", "Corp")):
        assert cli(*args).code == 0
    r = cli("policies", "add", "Default", "--patch-server", "local", "--groups", "Corp",
            "--scan-weekday", "monday", "--scan-at", "03:00", "--scan-every-weeks", "2",
            "--run-if-missed")
    assert r.code == 0, r.err
    assert cli("policies", "add", "Lab", "--patch-server", "local", "--groups", "Berlin Lab",
               "--auto-install", "--auto-restart", "--roaming-microsoft").code == 0
    docs = [base_inventory(f"ws-{n}") for n in range(1, 4)]
    assert cli("endpoints", "import", str(_write(tmp_path / "all.json", docs)),
               "--group", "Munich").code == 0
    assert cli("endpoints", "move", "ws-2", "--group", "Berlin Lab").code == 0
    assert cli("endpoints", "move", "WS-3", "--group", "Berlin").code == 0

    rows = {r["hostname"]: r for r in _json(cli, "endpoints", "list")}
    assert {h: (r["group"], r["policy"]) for h, r in rows.items()} == {
        "WS-1": ("Corp/Munich", "Default"),
        "WS-2": ("Corp/Berlin/Berlin Lab", "Lab"),
        "WS-3": ("Corp/Berlin", "Default"),
    }
    row = rows["WS-1"]
    assert (row["os_name"], row["display_version"], row["build"]) == ("Windows 11 Pro", "23H2",
                                                                      "22631.3737")
    # An import rescans the endpoint at once; with an empty catalog nothing is missing.
    assert (row["programs"], row["kbs"], row["scan_state"], row["roaming"]) == (
        3, 2, "Up-to-Date", False)
    berlin = _json(cli, "endpoints", "list", "--group", "Berlin")
    assert [r["hostname"] for r in berlin] == ["WS-2", "WS-3"]  # subgroups included
    table = cli("endpoints", "list")
    assert table.code == 0 and "Endpoints" in table.out

    groups = {g["name"]: g for g in _json(cli, "groups", "list")}
    assert groups["Berlin Lab"]["path"] == "Corp/Berlin/Berlin Lab"
    assert (groups["Berlin"]["policy"], groups["Berlin"]["effective_policy"]) == (None, "Default")
    policies = {p["name"]: p for p in _json(cli, "policies", "list")}
    assert policies["Default"]["scan_schedule"]["every_weeks"] == 2
    assert policies["Default"]["run_if_missed"] is True
    assert policies["Lab"]["auto_install"] and policies["Lab"]["roaming_microsoft"]

    # Taking Berlin Lab into Default moves it away from Lab, and says so.
    r = cli("policies", "edit", "Default", "--groups", "Corp,Berlin Lab", "--no-run-if-missed")
    assert r.code == 0 and "moved from policy Lab" in r.out
    assert cli("policies", "delete", "Lab", "--yes").code == 0
    assert {r["policy"] for r in _json(cli, "endpoints", "list")} == {"Default"}
    assert cli("policies", "edit", "Default", "--clear-schedule").code == 0
    assert _json(cli, "policies", "list")[0]["scan_schedule"] is None
    assert "Default" in cli("policies", "list").out


def test_policy_and_group_mistakes_are_one_line(cli, ready: Path) -> None:
    assert cli("groups", "add", "Corp").code == 0
    _fails(cli("groups", "add", "Corp"), "already exists")
    _fails(cli("groups", "add", "Sub", "--parent", "Nope"), "no group named 'Nope'")
    _fails(cli("groups", "add", " lead"), "invalid group name")
    _fails(cli("policies", "add", "P"), "--patch-server is required")
    _fails(cli("policies", "add", "P", "--patch-server", "ghost"), "no patch server named")
    _fails(cli("policies", "add", "P", "--patch-server", "local", "--scan-weekday", "funday",
               "--scan-at", "03:00"), "invalid weekday")
    _fails(cli("policies", "add", "P", "--patch-server", "local", "--scan-weekday", "monday",
               "--scan-at", "25:00"), "invalid time")
    _fails(cli("policies", "add", "P", "--patch-server", "local", "--scan-weekday", "monday"),
           "needs both --scan-weekday and --scan-at")
    _fails(cli("policies", "add", "P", "--patch-server", "local", "--run-if-missed"),
           "needs a scan schedule")
    _fails(cli("policies", "add", "P", "--patch-server", "local", "--groups", "Corp,Nope"),
           "no group named 'Nope'")
    _fails(cli("policies", "add", "P", "--patch-server", "local", "--scan-weekday", "monday",
               "--scan-at", "03:00", "--scan-every-weeks", "0"), "between 1 and 52")
    assert _json(cli, "policies", "list") == []
    _fails(cli("policies", "edit", "Ghost", "--auto-install"), "no policy named")
    _fails(cli("policies", "delete", "Ghost"), "needs --yes")
    _fails(cli("endpoints", "move", "nobody", "--group", "Corp"), "no endpoint named")
    _fails(cli("endpoints", "revoke", "nobody"), "no endpoint named")
    _fails(cli("endpoints", "list", "--group", "Nope"), "no group named")


def test_import_is_all_or_nothing_per_file(cli, ready: Path, tmp_path: Path) -> None:
    good = _write(tmp_path / "one.json", base_inventory("ws-single", programs=4))
    bad_doc = base_inventory("ws-bad")
    bad_doc["os"]["arch"] = "sparc"
    bad = _write(tmp_path / "bad.json", [base_inventory("ws-fine"), bad_doc])
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema_version": 1,', encoding="utf-8")

    r = cli("endpoints", "import", str(bad))
    _fails(r, "document 2 of 2: os.arch")
    assert str(bad) in r.err
    _fails(cli("endpoints", "import", str(broken)), "malformed JSON")
    _fails(cli("endpoints", "import", str(tmp_path / "missing.json")), "no such file")
    dup = _write(tmp_path / "dup.json", [base_inventory("ws-dup"), base_inventory("WS-DUP")])
    _fails(cli("endpoints", "import", str(dup)), "appears twice")
    assert _json(cli, "endpoints", "list") == []

    # Several files: the good one is stored, each bad one reported, exit 2.
    r = cli("endpoints", "import", str(good), str(bad), str(broken))
    assert r.code == 2
    assert len(r.err.strip().splitlines()) == 2 and "Traceback" not in r.err
    assert "imported 1 endpoint(s)" in r.out
    rows = _json(cli, "endpoints", "list")
    assert [(row["hostname"], row["programs"]) for row in rows] == [("WS-SINGLE", 4)]

    # Re-importing replaces the inventory rather than adding to it.
    assert cli("endpoints", "import", str(_write(tmp_path / "again.json",
                                                 base_inventory("ws-single", 1)))).code == 0
    assert _json(cli, "endpoints", "list")[0]["programs"] == 1


def test_inventory_hooks_run_after_an_import(cli, ready: Path, tmp_path: Path) -> None:
    from patchflow import fleet

    calls: list[list[int]] = []
    fleet.INVENTORY_HOOKS.append(calls.append)
    try:
        assert cli("endpoints", "import", str(_write(tmp_path / "a.json", [
            base_inventory("ws-h1"), base_inventory("ws-h2")]))).code == 0
    finally:
        fleet.INVENTORY_HOOKS.remove(calls.append)
    assert len(calls) == 1 and len(calls[0]) == 2


def test_enrollment_tokens_from_the_cli(cli, ready: Path) -> None:
    assert cli("groups", "add", "Kiosk").code == 0
    r = cli("endpoints", "token", "create", "--group", "Kiosk", "--expires", "12h", "--uses", "3")
    assert r.code == 0, r.err
    token = r.out.strip()
    assert token.startswith("pfe_") and len(r.out.strip().splitlines()) == 1
    assert "3 use(s)" in r.err and "group Kiosk" in r.err
    created = _json(cli, "endpoints", "token", "create", "--expires", "never")
    assert created["expires_at"] is None and created["uses_left"] is None
    listed = _json(cli, "endpoints", "token", "list")
    assert token not in json.dumps(listed) and created["token"] not in json.dumps(listed)
    assert [(t["group"], t["uses_left"], t["state"]) for t in listed] == [
        ("Kiosk", 3, "active"), (None, None, "active")]
    assert cli("endpoints", "token", "revoke", str(created["id"])).code == 0
    assert _json(cli, "endpoints", "token", "list")[1]["state"] == "revoked"
    assert "Enrollment tokens" in cli("endpoints", "token", "list").out
    _fails(cli("endpoints", "token", "create", "--expires", "tomorrow"), "invalid duration")
    _fails(cli("endpoints", "token", "create", "--uses", "0"), "--uses must be between 1")
    _fails(cli("endpoints", "token", "create", "--group", "Nope"), "no group named")
    _fails(cli("endpoints", "token", "revoke", "999"), "no enrollment token with id 999")


def test_enrollment_races_for_the_last_use(ready: Path) -> None:
    """Two enrollments with a one-use token: the conditional UPDATE lets exactly one win."""
    from models.db import session_scope
    from patchflow import fleet

    with session_scope() as session:
        token, _row = fleet.create_enrollment_token(session, uses=1)
    with session_scope() as session:
        fleet.enroll(session, token, "first")
    with pytest.raises(fleet.Forbidden, match="used up"), session_scope() as session:
        fleet.enroll(session, token, "second")
    with session_scope() as session:
        assert [row["hostname"] for row in fleet.list_endpoints(session)] == ["FIRST"]
