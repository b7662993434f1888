"""The admin API over real HTTPS, on SQLite and MariaDB: token auth, and the same rules as the
CLI for endpoints, enrollment tokens, groups, policies and patch servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.fixtures.agent.harness import (
    Api,
    api_on_both_databases,
    base_inventory,
    json_error,
)

api = api_on_both_databases("admin")


@pytest.fixture
def admin(api: Api) -> Iterator[httpx.Client]:
    api.reset()
    with api.client(headers={"Authorization": f"Bearer {api.admin_token()}"}) as client:
        yield client


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def test_admin_routes_need_a_valid_admin_token(api: Api, admin: httpx.Client, cli) -> None:
    with api.client() as anonymous:
        assert "admin token required" in json_error(anonymous.get("/api/v1/admin/endpoints"), 401)
        bad = anonymous.get("/api/v1/admin/groups", headers={"Authorization": "Bearer nope"})
        assert "invalid admin token" in json_error(bad, 401)
        # An agent's credentials are not an admin token.
        agent = api.enroll(anonymous, "ws-1")
        assert json_error(anonymous.get("/api/v1/admin/groups", headers=agent), 401)
    # The CLI prints a token once; it works until revoked.
    created = cli("admin", "token", "create", "--name", "ops")
    assert created.code == 0, created.err
    token = created.out.strip()
    assert token.startswith("pfa_") and "not shown again" in created.err
    with api.client(headers={"Authorization": f"Bearer {token}"}) as ops:
        assert ops.get("/api/v1/admin/groups").status_code == 200
        listed = cli("admin", "token", "list", "--json")
        assert token not in listed.out
        ops_id = next(t["id"] for t in __import__("json").loads(listed.out) if t["name"] == "ops")
        assert cli("admin", "token", "revoke", str(ops_id)).code == 0
        assert "revoked" in json_error(ops.get("/api/v1/admin/groups"), 403)
    assert admin.get("/api/v1/admin/groups").status_code == 200


def test_groups_policies_and_endpoints(api: Api, admin: httpx.Client) -> None:
    _ok(admin.post("/api/v1/admin/servers", json={"name": "local", "host": "patch.corp"}), 201)
    _ok(admin.post("/api/v1/admin/groups", json={"name": "Sites"}), 201)
    _ok(admin.post("/api/v1/admin/groups", json={"name": "Berlin", "parent": "Sites"}), 201)
    _ok(admin.post("/api/v1/admin/groups", json={"name": "Berlin Lab", "parent": "Berlin"}), 201)
    policy = _ok(admin.post("/api/v1/admin/policies", json={
        "name": "Workstations", "patch_server": "local", "groups": ["Sites"],
        "scan_weekday": "Tuesday", "scan_at": "03:00", "scan_every_weeks": 2,
        "run_if_missed": True}), 201)
    assert policy["scan_schedule"]["weekday"] == "tuesday"
    assert policy["groups"] == ["Sites"]

    imported = _ok(admin.post("/api/v1/admin/endpoints/import?group=Berlin%20Lab",
                              json=[base_inventory("ws-1"), base_inventory("ws-2")]))
    assert imported == {"imported": 2, "hostnames": ["WS-1", "WS-2"]}
    rows = _ok(admin.get("/api/v1/admin/endpoints", params={"group": "Berlin"}))
    assert [(r["hostname"], r["group"], r["policy"]) for r in rows] == [
        ("WS-1", "Sites/Berlin/Berlin Lab", "Workstations"),
        ("WS-2", "Sites/Berlin/Berlin Lab", "Workstations"),
    ]
    # A nearer policy wins over the inherited one.
    _ok(admin.post("/api/v1/admin/policies", json={
        "name": "Lab", "patch_server": "local", "groups": ["Berlin Lab"], "auto_install": True}),
        201)
    rows = _ok(admin.get("/api/v1/admin/endpoints"))
    assert {r["policy"] for r in rows} == {"Lab"}
    _ok(admin.post("/api/v1/admin/endpoints/ws-2/move", json={"group": "Sites"}))
    rows = {r["hostname"]: r for r in _ok(admin.get("/api/v1/admin/endpoints"))}
    assert (rows["WS-2"]["group"], rows["WS-2"]["policy"]) == ("Sites", "Workstations")

    edited = _ok(admin.patch("/api/v1/admin/policies/Lab", json={"auto_restart": True,
                                                                 "groups": []}))
    assert edited["groups"] == [] and edited["auto_restart"] and edited["auto_install"]
    groups = {g["name"]: g for g in _ok(admin.get("/api/v1/admin/groups"))}
    assert groups["Berlin Lab"]["effective_policy"] == "Workstations"
    assert groups["Berlin Lab"]["endpoints"] == 1
    _ok(admin.delete("/api/v1/admin/policies/Workstations"))
    assert [p["name"] for p in _ok(admin.get("/api/v1/admin/policies"))] == ["Lab"]
    revoked = _ok(admin.post("/api/v1/admin/endpoints/ws-1/revoke"))
    assert revoked == {"hostname": "WS-1", "revoked": True}


def test_enrollment_tokens_over_the_api(api: Api, admin: httpx.Client) -> None:
    _ok(admin.post("/api/v1/admin/groups", json={"name": "Kiosk"}), 201)
    created = _ok(admin.post("/api/v1/admin/enrollment-tokens",
                             json={"group": "Kiosk", "expires": "2h", "uses": 1}), 201)
    assert created["token"].startswith("pfe_") and created["state"] == "active"
    listed = _ok(admin.get("/api/v1/admin/enrollment-tokens"))
    assert "token" not in listed[0] and listed[0]["group"] == "Kiosk"
    with api.client() as agent:
        enrolled = agent.post("/api/v1/agent/enroll",
                              json={"token": created["token"], "hostname": "kiosk-1"})
        assert enrolled.status_code == 201
    assert _ok(admin.get("/api/v1/admin/enrollment-tokens"))[0]["state"] == "used up"
    second = _ok(admin.post("/api/v1/admin/enrollment-tokens", json={}), 201)
    _ok(admin.delete(f"/api/v1/admin/enrollment-tokens/{second['id']}"))
    with api.client() as agent:
        refused = agent.post("/api/v1/agent/enroll",
                             json={"token": second["token"], "hostname": "kiosk-2"})
        assert "revoked" in json_error(refused, 403)
    endpoints = _ok(admin.get("/api/v1/admin/endpoints"))
    assert [(e["hostname"], e["group"]) for e in endpoints] == [("KIOSK-1", "Kiosk")]


def test_patch_servers_over_the_api(admin: httpx.Client) -> None:
    added = _ok(admin.post("/api/v1/admin/servers", json={
        "name": "local", "host": "patch.corp.example", "winget_source": "none",
        "proxy": "http://proxy.corp:3128", "proxy_user": "svc", "proxy_password": "s3cret"}), 201)
    assert added["port"] == 6201 and added["proxy_password_set"] is True
    assert "s3cret" not in str(added)
    _ok(admin.post("/api/v1/admin/servers",
                   json={"name": "branch", "host": "10.1.2.3", "upstream": "server:local"}), 201)
    assert _ok(admin.patch("/api/v1/admin/servers/branch", json={"port": 7443}))["port"] == 7443
    filters = _ok(admin.put("/api/v1/admin/servers/local/filters",
                            json={"categories": ["Security Updates"], "languages": []}))
    assert filters == {"categories": ["Security Updates"], "languages": None, "products": None}
    schedule = _ok(admin.put("/api/v1/admin/servers/local/schedule", json={
        "frequency": "monthly", "weekday": "tuesday", "at": "22:00", "week_of_month": 2}))
    assert schedule["week_of_month"] == 2
    names = [s["name"] for s in _ok(admin.get("/api/v1/admin/servers"))]
    assert names == ["branch", "local"]
    assert "upstream of branch" in json_error(admin.delete("/api/v1/admin/servers/local"), 400)
    _ok(admin.delete("/api/v1/admin/servers/branch"))
    assert "no patch server named" in json_error(admin.delete("/api/v1/admin/servers/branch"), 404)


def test_admin_errors_are_one_line_json_and_store_nothing(api: Api, admin: httpx.Client) -> None:
    cases = [
        (admin.post("/api/v1/admin/servers", json={"name": "s", "host": "h", "port": 70000}),
         400, "invalid port"),
        (admin.post("/api/v1/admin/servers", json={"name": "s"}), 400, "--host is required"),
        (admin.post("/api/v1/admin/servers", json={"name": "s", "host": "h", "bogus": 1}),
         422, "bogus"),
        (admin.patch("/api/v1/admin/servers/ghost", json={"port": 1}), 404, "no patch server"),
        (admin.post("/api/v1/admin/groups", json={"name": "x", "parent": "nope"}), 404,
         "no group named"),
        (admin.post("/api/v1/admin/groups", json={"name": ""}), 400, "invalid group name"),
        (admin.post("/api/v1/admin/policies", json={"name": "p"}), 400, "--patch-server"),
        (admin.post("/api/v1/admin/policies", json={"name": "p", "patch_server": "nope"}), 404,
         "no patch server"),
        (admin.post("/api/v1/admin/enrollment-tokens", json={"expires": "soon"}), 400,
         "invalid duration"),
        (admin.post("/api/v1/admin/enrollment-tokens", json={"uses": 0}), 422, "uses"),
        (admin.post("/api/v1/admin/endpoints/ghost/move", json={"group": "x"}), 404,
         "no endpoint"),
        (admin.post("/api/v1/admin/endpoints/import",
                    json=[base_inventory("ok-1"), {**base_inventory("bad"), "os": None}]),
         422, "os"),
        (admin.post("/api/v1/admin/endpoints/import",
                    json=[base_inventory("twice"), base_inventory("twice")]), 400, "twice"),
        (admin.post("/api/v1/admin/groups", content=b"{nope",
                    headers={"Content-Type": "application/json"}), 400, "malformed JSON"),
    ]
    for response, status, message in cases:
        assert message in json_error(response, status)
    for table in ("patch_servers", "groups", "policies", "endpoints", "installed_programs",
                  "enrollment_tokens"):
        assert api.count(table) == 0, table
