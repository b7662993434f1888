"""An endpoint's identity is its agent credential, not its name.

Over real HTTPS on loopback, on SQLite and MariaDB: enrolling a host name that exists (active,
revoked, in another group, imported agentless) never touches that endpoint; the new agent waits
as a pending re-enrolment until an administrator approves or rejects it; a host name reported
in an inventory is recorded, never applied; and inventories and enrolment tokens take JSON
types as declared (no `true` for a number, no number for a time).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.agent.harness import (
    Api,
    api_on_both_databases,
    base_inventory,
    json_error,
    wait_rescanned,
)

api = api_on_both_databases("identity")


@pytest.fixture(autouse=True)
def wide_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tables unfolded, so a cell's text can be looked for whole."""
    from cli.common import console

    monkeypatch.setattr(console, "_width", 300)


@pytest.fixture
def http(api: Api) -> Iterator[httpx.Client]:
    from patchflow import fleet
    from patchflow.scanning.service import RESCANS

    # Uploads are rescanned in the background a moment later (and `endpoints import` adds a
    # hook in this process): both must be done before the next test empties the tables, or a
    # late rescan lands on the next test's endpoint with the same (SQLite reuses) id.
    hooks = list(fleet.INVENTORY_HOOKS)
    api.reset()
    try:
        with api.client() as client:
            yield client
    finally:
        fleet.INVENTORY_HOOKS[:] = hooks
        time.sleep(0.2)  # the upload's background task queues its endpoint after the response
        RESCANS.wait_idle(30)


def _enroll(http: httpx.Client, token: str, hostname: str) -> tuple[dict[str, str], bool]:
    response = http.post("/api/v1/agent/enroll", json={"token": token, "hostname": hostname})
    assert response.status_code == 201, response.text
    body = response.json()
    headers = {"X-Agent-Id": body["agent_id"], "Authorization": f"Bearer {body['secret']}"}
    return headers, bool(body.get("pending_approval", False))


def _rows(api: Api) -> list[dict[str, Any]]:
    from models.db import session_scope
    from patchflow import fleet

    with session_scope(api.db_url) as session:
        return fleet.list_endpoints(session)


def _row(api: Api, hostname: str, pending: bool = False) -> dict[str, Any]:
    rows = [r for r in _rows(api)
            if r["hostname"] == hostname and r.get("pending_reenrollment", False) is pending]
    assert len(rows) == 1, rows
    return rows[0]


def _endpoint_id(api: Api, hostname: str) -> int:
    from models.db import session_scope
    from patchflow import fleet

    with session_scope(api.db_url) as session:
        return fleet.get_endpoint(session, hostname).id


def _works(http: httpx.Client, headers: dict[str, str]) -> int:
    return http.get("/api/v1/agent/jobs", headers=headers).status_code


def _groups(api: Api, *names: str) -> None:
    from models.db import session_scope
    from patchflow import fleet

    with session_scope(api.db_url) as session:
        for name in names:
            fleet.add_group(session, name)


def test_enrolling_an_existing_name_never_touches_the_endpoint(
    api: Api, http: httpx.Client, cli
) -> None:
    _groups(api, "Lab", "Elsewhere")
    real, pending = _enroll(http, api.token("Lab"), "ws-1")
    assert not pending
    assert http.put("/api/v1/agent/inventory", headers=real,
                    json=base_inventory("ws-1", 4)).status_code == 200
    wait_rescanned(api, "WS-1")
    before = _row(api, "WS-1")
    endpoint_id = _endpoint_id(api, "WS-1")

    # Someone with a token for another group enrolls the same name (any case).
    intruder, pending = _enroll(http, api.token("Elsewhere", uses=5), "Ws-1")
    assert _works(http, real) == 200  # the real agent still authenticates
    assert pending
    assert http.get("/api/v1/agent/jobs", headers=intruder).json() == []
    # Its "fully patched" inventory is refused and nothing of it is stored.
    fake = base_inventory("ws-1", 0)
    fake["updates"] = []
    refused = http.put("/api/v1/agent/inventory", headers=intruder, json=fake)
    assert "awaits approval" in json_error(refused, 409)
    after = _row(api, "WS-1")
    assert after == before and _endpoint_id(api, "WS-1") == endpoint_id
    assert (after["group"], after["programs"], after["revoked"]) == ("Lab", 4, False)
    waiting = _row(api, "WS-1", pending=True)
    assert (waiting["group"], waiting["programs"], waiting["scan_state"]) == (None, 0,
                                                                              "Not Scanned")
    # One waits at a time; the refused attempt does not use the token up.
    token = api.token(uses=1)
    again = http.post("/api/v1/agent/enroll", json={"token": token, "hostname": "WS-1"})
    assert "already waiting for approval" in json_error(again, 409)
    assert _enroll(http, token, "ws-other")[1] is False

    # A revoked endpoint stays revoked, and its old agent stays refused.
    old, _ = _enroll(http, api.token(), "ws-2")
    assert cli("endpoints", "revoke", "ws-2").code == 0
    newcomer, pending = _enroll(http, api.token("Elsewhere"), "ws-2")
    assert pending and _works(http, newcomer) == 200
    assert "revoked" in json_error(http.get("/api/v1/agent/jobs", headers=old), 403)
    assert _row(api, "WS-2")["revoked"] is True and _row(api, "WS-2")["group"] is None

    # An endpoint imported without an agent is not claimed by the first token holder either.
    doc = base_inventory("ws-3", 2)
    imported = cli("endpoints", "import", _write(api, "ws-3.json", doc), "--group", "Lab")
    assert imported.code == 0, imported.err
    assert _enroll(http, api.token("Elsewhere"), "ws-3")[1] is True
    assert (_row(api, "WS-3")["enrolled"], _row(api, "WS-3")["group"]) == (False, "Lab")

    # Pending re-enrolments are not scanned, counted or listed under their internal name.
    from models.db import session_scope
    from patchflow.reporting.report_data import load_endpoints, state_counts
    from patchflow.scanning.service import Selection, select_endpoints

    with session_scope(api.db_url) as session:
        everything = select_endpoints(session, Selection(all=True))
        states = state_counts(session)
        compliance = load_endpoints(session)
    assert everything == sorted([endpoint_id, _endpoint_id(api, "WS-OTHER"),
                                 _endpoint_id(api, "WS-3")])  # WS-2 is revoked
    assert int(states["endpoints"].sum()) == 4
    assert sorted(compliance["endpoint"]) == ["WS-1", "WS-2", "WS-3", "WS-OTHER"]
    listed = cli("endpoints", "list", "--json")
    rows = json.loads(listed.out)
    assert [(r["hostname"], r["pending_reenrollment"]) for r in rows] == [
        ("WS-1", False), ("WS-1", True), ("WS-2", False), ("WS-2", True), ("WS-3", False),
        ("WS-3", True), ("WS-OTHER", False)]
    table = cli("endpoints", "list")
    assert table.code == 0 and "~" not in table.out
    assert table.out.count("(pending re-enrolment)") == 3 and "WS-2 (revoked)" in table.out
    assert "3 re-enrolment(s) await approval" in table.err
    in_lab = json.loads(cli("endpoints", "list", "--group", "Lab", "--json").out)
    assert [(r["hostname"], r["pending_reenrollment"]) for r in in_lab] == [
        ("WS-1", False), ("WS-1", True), ("WS-3", False), ("WS-3", True)]


def _write(api: Api, name: str, data: Any) -> str:
    path = api.home / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return str(path)


def test_approving_a_reenrolment_hands_the_endpoint_to_the_new_agent(
    api: Api, http: httpx.Client, cli
) -> None:
    _groups(api, "Lab", "Elsewhere")
    old, _ = _enroll(http, api.token("Lab"), "ws-5")
    assert http.put("/api/v1/agent/inventory", headers=old,
                    json=base_inventory("ws-5", 3)).status_code == 200
    endpoint_id = _endpoint_id(api, "WS-5")
    nothing = cli("endpoints", "approve-reenroll", "ws-5")
    assert nothing.code != 0 and "no re-enrolment of WS-5" in nothing.err
    reinstalled, pending = _enroll(http, api.token("Elsewhere"), "ws-5")
    assert pending

    approved = cli("endpoints", "approve-reenroll", "ws-5")
    assert approved.code == 0, approved.err
    assert _works(http, old) == 401  # the previous agent's secret is dead
    assert _works(http, reinstalled) == 200
    sent = http.put("/api/v1/agent/inventory", headers=reinstalled, json=base_inventory("ws-5", 6))
    assert sent.status_code == 200, sent.text
    # Same endpoint row (history kept), its group, not the token's; no pending row left.
    assert _endpoint_id(api, "WS-5") == endpoint_id
    row = _row(api, "WS-5")
    assert (row["group"], row["programs"], row["revoked"]) == ("Lab", 6, False)
    assert not any(r["pending_reenrollment"] for r in _rows(api))

    # Onto a revoked endpoint: refused unless the revocation is lifted on purpose.
    assert cli("endpoints", "revoke", "ws-5").code == 0
    replacement, _ = _enroll(http, api.token(), "ws-5")
    refused = cli("endpoints", "approve-reenroll", "ws-5")
    assert refused.code != 0 and "--unrevoke" in refused.err and "Traceback" not in refused.err
    assert _row(api, "WS-5")["revoked"] is True and _row(api, "WS-5", pending=True)
    assert "revoked" in json_error(http.get("/api/v1/agent/jobs", headers=reinstalled), 403)
    assert cli("endpoints", "approve-reenroll", "ws-5", "--unrevoke").code == 0
    assert _row(api, "WS-5")["revoked"] is False
    assert _works(http, replacement) == 200 and _works(http, reinstalled) == 401


def test_rejecting_a_reenrolment_leaves_the_endpoint_as_it_was(
    api: Api, http: httpx.Client, cli
) -> None:
    real, _ = _enroll(http, api.token(), "ws-6")
    before = _row(api, "WS-6")
    stranger, _ = _enroll(http, api.token(), "ws-6")
    rejected = cli("endpoints", "reject-reenroll", "WS-6")
    assert rejected.code == 0, rejected.err
    assert _works(http, stranger) == 401 and _works(http, real) == 200
    assert _row(api, "WS-6") == before and len(_rows(api)) == 1
    again = cli("endpoints", "reject-reenroll", "ws-6")
    assert again.code != 0 and "no re-enrolment" in again.err

    # The admin API does the same, with the same rules.
    admin = {"Authorization": f"Bearer {api.admin_token()}"}
    second, _ = _enroll(http, api.token(), "ws-6")
    assert "no endpoint" in json_error(http.post("/api/v1/admin/endpoints/ws-7/reject-reenroll",
                                             headers=admin), 404)
    sloppy = http.post("/api/v1/admin/endpoints/ws-6/approve-reenroll", headers=admin,
                       json={"unrevoke": "yes"})
    assert "unrevoke" in json_error(sloppy, 422)
    done = http.post("/api/v1/admin/endpoints/ws-6/approve-reenroll", headers=admin, json={})
    assert done.status_code == 200, done.text
    assert _works(http, second) == 200 and _works(http, real) == 401


def test_a_reported_host_name_is_recorded_and_shown_never_applied(
    api: Api, http: httpx.Client, cli
) -> None:
    headers, _ = _enroll(http, api.token(), "fuzz-1")
    sent = http.put("/api/v1/agent/inventory", headers=headers, json=base_inventory("0"))
    assert sent.json()["hostname"] == "FUZZ-1" and sent.json()["reported_hostname"] == "0"
    row = _row(api, "FUZZ-1")
    assert row["reported_hostname"] == "0"
    shown = cli("endpoints", "show", "fuzz-1", "--json")
    assert shown.code == 0, shown.err
    assert [(r["hostname"], r["reported_hostname"]) for r in json.loads(shown.out)] == [
        ("FUZZ-1", "0")]
    table = cli("endpoints", "list")
    assert "FUZZ-1 (reports 0)" in table.out
    # The name the agent reports is still free for an enrolment of its own.
    assert _enroll(http, api.token(), "0")[1] is False
    assert sorted(r["hostname"] for r in _rows(api)) == ["0", "FUZZ-1"]


@pytest.mark.parametrize(("path", "value", "field"), [
    (("os", "build"), True, "os.build"),
    (("os", "build"), 22631.0, "os.build"),
    (("os", "ubr"), "3737", "os.ubr"),
    (("os", "hotpatch"), 1, "os.hotpatch"),
    (("schema_version",), True, "schema_version"),
    (("pending_reboot",), 0, "pending_reboot"),
    (("collected_at",), 0, "collected_at"),
    (("collected_at",), "1700000000", "collected_at"),
    (("collected_at",), "9999-12-31T00:00:00Z", "collected_at"),
    (("collected_at",), "1999-12-31T23:59:59Z", "collected_at"),
    (("updates", 0, "installed_on"), 0, "updates.0.installed_on"),
])
def test_inventory_fields_take_their_json_type_only(
    api: Api, http: httpx.Client, path: tuple[Any, ...], value: Any, field: str
) -> None:
    headers, _ = _enroll(http, api.token(), "ws-strict")
    assert http.put("/api/v1/agent/inventory", headers=headers,
                    json=base_inventory("ws-strict", 2)).status_code == 200
    doc: Any = base_inventory("ws-strict", 5)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    response = http.put("/api/v1/agent/inventory", headers=headers, json=doc)
    assert json_error(response, 422).startswith(f"{field}:")
    row = _row(api, "WS-STRICT")
    assert (row["programs"], row["build"]) == (2, "22631.3737")  # the previous one stands


def test_enrolment_token_uses_must_be_a_number(api: Api, http: httpx.Client) -> None:
    admin = {"Authorization": f"Bearer {api.admin_token()}"}
    for uses in (True, 2.0, "3"):
        response = http.post("/api/v1/admin/enrollment-tokens", headers=admin,
                             json={"uses": uses})
        assert "uses" in json_error(response, 422), uses
    assert api.count("enrollment_tokens") == 0
    created = http.post("/api/v1/admin/enrollment-tokens", headers=admin, json={"uses": 2})
    assert created.status_code == 201 and created.json()["uses_left"] == 2


def test_approving_every_pending_reenrolment_skips_revoked_endpoints(
    api: Api, http: httpx.Client, cli
) -> None:
    olds = {name: _enroll(http, api.token(), name)[0] for name in ("ws-10", "ws-11", "ws-12")}
    assert cli("endpoints", "revoke", "ws-12").code == 0
    news = {name: _enroll(http, api.token(), name)[0] for name in olds}
    assert cli("endpoints", "approve-reenroll").code == 2  # HOST or --all
    assert cli("endpoints", "approve-reenroll", "ws-10", "--all").code == 2
    done = cli("endpoints", "approve-reenroll", "--all")
    assert done.code == 0, done.err
    assert "skipped WS-12: revoked" in done.err
    for name in ("ws-10", "ws-11"):
        assert _works(http, news[name]) == 200 and _works(http, olds[name]) == 401
    assert _row(api, "WS-12")["revoked"] is True and _row(api, "WS-12", pending=True)
    assert "no re-enrolment to approve" in cli("endpoints", "approve-reenroll", "--all").out
