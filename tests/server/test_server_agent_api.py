"""The agent API over real HTTPS on loopback, on SQLite and MariaDB: enrollment, inventories,
jobs, and every bad input getting its 4xx JSON error with nothing stored."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.fixtures.agent.harness import (
    Api,
    api_on_both_databases,
    base_inventory,
    json_error,
    running_api,
)

MAX_BODY = 256 * 1024
FAILURES_PER_MINUTE = 5


api = api_on_both_databases("agent-api", max_body_bytes=MAX_BODY,
                             enroll_failures_per_minute=FAILURES_PER_MINUTE)


@pytest.fixture
def http(api: Api) -> Iterator[httpx.Client]:
    api.reset()
    with api.client() as client:
        yield client


def _programs(api: Api, hostname: str) -> list[str]:
    from models.db import get_engine

    with get_engine(api.db_url).connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT p.name FROM installed_programs p JOIN endpoints e ON e.id = p.endpoint_id "
            "WHERE e.hostname = :h ORDER BY p.name"), {"h": hostname})
        return [row[0] for row in rows]


def test_health_docs_and_json_errors_for_unknown_routes(api: Api, http: httpx.Client) -> None:
    health = http.get("/api/v1/health")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert "swagger" in http.get("/docs").text.lower()
    paths = http.get("/openapi.json").json()["paths"]
    for path in ("/api/v1/agent/enroll", "/api/v1/agent/inventory", "/api/v1/agent/jobs",
                 "/api/v1/agent/jobs/{job_id}/result", "/api/v1/admin/endpoints",
                 "/api/v1/admin/servers", "/api/v1/health"):
        assert path in paths
    assert json_error(http.get("/api/v1/nothing-here"), 404)
    assert json_error(http.delete("/api/v1/health"), 405)


def test_several_agents_enroll_and_upload_concurrently(api: Api, http: httpx.Client) -> None:
    from models.db import session_scope
    from patchflow import fleet

    with session_scope(api.db_url) as session:
        fleet.add_group(session, "Lab")
        token, _row = fleet.create_enrollment_token(session, "Lab", "1h", uses=6)
    errors: list[str] = []

    def agent(n: int) -> None:
        with api.client() as client:
            hostname = f"ws-{n:04d}"
            enrolled = client.post("/api/v1/agent/enroll", json={"token": token,
                                                                 "hostname": hostname})
            if enrolled.status_code != 201:
                errors.append(enrolled.text)
                return
            body = enrolled.json()
            headers = {"X-Agent-Id": body["agent_id"], "Authorization": f"Bearer {body['secret']}"}
            for programs in (5, 2 + n):  # the second upload replaces the first
                sent = client.put("/api/v1/agent/inventory", headers=headers,
                                  json=base_inventory(hostname, programs))
                if sent.status_code != 200:
                    errors.append(sent.text)
            if client.get("/api/v1/agent/jobs", headers=headers).json() != []:
                errors.append("jobs not empty")

    threads = [threading.Thread(target=agent, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []

    with session_scope(api.db_url) as session:
        rows = {row["hostname"]: row for row in fleet.list_endpoints(session)}
    assert sorted(rows) == [f"WS-{n:04d}" for n in range(1, 7)]
    for n in range(1, 7):
        row = rows[f"WS-{n:04d}"]
        assert (row["group"], row["programs"], row["kbs"]) == ("Lab", 2 + n, 2)
        assert row["build"] == "22631.3737" and row["enrolled"] and not row["roaming"]
    # All six uses are gone: a seventh agent is refused and nothing is stored for it.
    refused = http.post("/api/v1/agent/enroll", json={"token": token, "hostname": "ws-0007"})
    assert "used up" in json_error(refused, 403)
    assert api.count("endpoints") == 6


def test_bad_enrollment_tokens_are_refused_and_store_nothing(api: Api, http: httpx.Client) -> None:
    from models import EnrollmentToken
    from models.db import session_scope

    expired = api.token(expires="1h")
    used_up = api.token(uses=1)
    revoked = api.token()
    with session_scope(api.db_url) as session:
        rows = session.scalars(sa.select(EnrollmentToken).order_by(EnrollmentToken.id)).all()
        rows[0].expires_at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
        rows[2].revoked = True
    assert http.post("/api/v1/agent/enroll",
                     json={"token": used_up, "hostname": "first"}).status_code == 201
    cases = [
        ({"token": "pfe_not-a-token", "hostname": "h1"}, 401, "unknown enrollment token"),
        ({"token": expired, "hostname": "h2"}, 403, "expired"),
        ({"token": used_up, "hostname": "h3"}, 403, "used up"),
        ({"token": revoked, "hostname": "h4"}, 403, "revoked"),
        ({"token": used_up, "hostname": "bad host!"}, 422, "hostname"),
        ({"hostname": "h5"}, 422, "token: Field required"),
    ]
    for body, status, message in cases:
        assert message in json_error(http.post("/api/v1/agent/enroll", json=body), status), body
    unknown = http.post("/api/v1/agent/enroll", json={"token": "x", "hostname": "h"})
    assert unknown.headers.get("www-authenticate") == "Bearer"
    assert api.count("endpoints") == 1
    with session_scope(api.db_url) as session:
        uses = [t.uses for t in session.scalars(sa.select(EnrollmentToken)
                                                .order_by(EnrollmentToken.id))]
    assert uses == [0, 1, 0]


def test_repeated_enrollment_failures_are_slowed_down(api: Api, http: httpx.Client) -> None:
    for _ in range(FAILURES_PER_MINUTE):
        response = http.post("/api/v1/agent/enroll", json={"token": "guess", "hostname": "h"})
        assert response.status_code == 401
    # That token now waits; another agent behind the same address (NAT) with its own token
    # does not: failures count per (address, token).
    blocked = http.post("/api/v1/agent/enroll", json={"token": "guess", "hostname": "h"})
    assert "too many failed enrollments" in json_error(blocked, 429)
    assert int(blocked.headers["retry-after"]) >= 1
    assert api.count("endpoints") == 0
    assert http.post("/api/v1/agent/enroll",
                     json={"token": api.token(), "hostname": "h"}).status_code == 201


def test_agent_credentials_are_checked(api: Api, http: httpx.Client) -> None:
    good = api.enroll(http, "ws-auth")
    doc = base_inventory("ws-auth")
    bad_secret = {**good, "Authorization": "Bearer not-the-secret"}
    unknown = {**good, "X-Agent-Id": "00000000-0000-0000-0000-000000000000"}
    for headers, message in (({}, "missing"), ({"X-Agent-Id": good["X-Agent-Id"]}, "missing"),
                             (bad_secret, "invalid agent credentials"),
                             (unknown, "invalid agent credentials")):
        assert message in json_error(http.put("/api/v1/agent/inventory", headers=headers,
                                          json=doc), 401)
        assert message in json_error(http.get("/api/v1/agent/jobs", headers=headers), 401)
    assert _programs(api, "WS-AUTH") == []
    assert http.put("/api/v1/agent/inventory", headers=good, json=doc).status_code == 200


def test_revoked_agent_is_refused_at_once(api: Api, http: httpx.Client, cli) -> None:
    headers = api.enroll(http, "ws-revoke")
    assert http.put("/api/v1/agent/inventory", headers=headers,
                    json=base_inventory("ws-revoke", 2)).status_code == 200
    result = cli("endpoints", "revoke", "ws-revoke")
    assert result.code == 0, result.err
    assert "revoked" in json_error(http.get("/api/v1/agent/jobs", headers=headers), 403)
    refused = http.put("/api/v1/agent/inventory", headers=headers,
                       json=base_inventory("ws-revoke", 7))
    assert "revoked" in json_error(refused, 403)
    assert len(_programs(api, "WS-REVOKE")) == 2
    # A new token does not bring it back: the enrolment waits for an administrator, and the
    # revoked endpoint stays revoked (tests/server/test_endpoint_identity.py has the whole story).
    fresh = api.enroll(http, "ws-revoke")
    assert http.get("/api/v1/agent/jobs", headers=fresh).json() == []
    assert "revoked" in json_error(http.get("/api/v1/agent/jobs", headers=headers), 403)


def test_oversized_bodies_get_413_and_store_nothing(api: Api, http: httpx.Client) -> None:
    headers = api.enroll(http, "ws-big")
    big = base_inventory("ws-big", programs=2000)
    payload = json.dumps(big).encode()
    assert len(payload) > MAX_BODY
    declared = http.put("/api/v1/agent/inventory", content=payload,
                        headers={**headers, "Content-Type": "application/json"})
    assert "too large" in json_error(declared, 413)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size must be counted
        for start in range(0, len(payload), 16384):
            yield payload[start:start + 16384]

    streamed = http.put("/api/v1/agent/inventory", content=chunks(),
                        headers={**headers, "Content-Type": "application/json"})
    assert "too large" in json_error(streamed, 413)
    assert _programs(api, "WS-BIG") == []
    assert api.count("installed_programs") == 0
    # The limit is on bytes, not on programs: a body under it goes through.
    assert http.put("/api/v1/agent/inventory", headers=headers,
                    json=base_inventory("ws-big", programs=200)).status_code == 200


def test_malformed_and_invalid_inventories_keep_the_previous_one(
    api: Api, http: httpx.Client
) -> None:
    headers = api.enroll(http, "ws-atomic")
    assert http.put("/api/v1/agent/inventory", headers=headers,
                    json=base_inventory("ws-atomic", 3)).status_code == 200
    before = _programs(api, "WS-ATOMIC")
    send = {**headers, "Content-Type": "application/json"}
    malformed = http.put("/api/v1/agent/inventory", headers=send,
                         content=b'{"schema_version": 1, "hostname": ')
    assert "malformed JSON" in json_error(malformed, 400)

    def broken(change: str) -> dict[str, object]:
        doc = base_inventory("ws-atomic", 5)
        if change == "arch":
            doc["programs"][1]["arch"] = "amd64"  # type: ignore[index]
        elif change == "kb":
            doc["updates"][0]["kb"] = "not-a-kb"  # type: ignore[index]
        elif change == "extra":
            doc["os"]["edition"] = "Pro"  # type: ignore[index]
        elif change == "version":
            doc["schema_version"] = 2
        elif change == "missing":
            del doc["os"]
        return doc

    expected = {"arch": "programs.1.arch", "kb": "updates.0.kb: not a KB number",
                "extra": "os.edition", "version": "schema_version", "missing": "os: Field required"}
    for change, field in expected.items():
        response = http.put("/api/v1/agent/inventory", headers=headers, json=broken(change))
        assert field in json_error(response, 422), change
    assert "request body" in json_error(http.put("/api/v1/agent/inventory", headers=send,
                                             content=b"[1, 2]"), 422)
    assert _programs(api, "WS-ATOMIC") == before


def test_inventory_replaces_whole_and_hooks_run_after_commit(api: Api, http: httpx.Client) -> None:
    from patchflow import fleet

    seen: list[tuple[list[int], int]] = []
    done = threading.Event()

    def record(ids: list[int]) -> None:
        seen.append((ids, len(_programs(api, "WS-HOOK"))))  # the new rows are committed
        done.set()

    def broken_hook(ids: list[int]) -> None:
        raise RuntimeError("a broken scan hook")

    fleet.INVENTORY_HOOKS[:] = [broken_hook, record]
    try:
        headers = api.enroll(http, "ws-hook")
        for programs in (4, 1):
            done.clear()
            response = http.put("/api/v1/agent/inventory", headers=headers,
                                json=base_inventory("ws-hook", programs))
            assert response.status_code == 200, response.text
            assert response.json() == {"hostname": "WS-HOOK", "reported_hostname": "WS-HOOK",
                                       "programs": programs, "updates": 2}
            assert done.wait(10)
    finally:
        fleet.INVENTORY_HOOKS.clear()
    assert [count for _ids, count in seen] == [4, 1]
    assert _programs(api, "WS-HOOK") == ["Mozilla Firefox (x64 en-US) 0"]
    with api.client() as client:
        assert client.get("/api/v1/health").status_code == 200


def test_renamed_host_is_recorded_not_applied(api: Api, http: httpx.Client) -> None:
    first = api.enroll(http, "ws-a")
    api.enroll(http, "ws-b")
    renamed = http.put("/api/v1/agent/inventory", headers=first, json=base_inventory("ws-a2"))
    assert renamed.json()["hostname"] == "WS-A"  # the machine was renamed; the endpoint not
    other = http.put("/api/v1/agent/inventory", headers=first, json=base_inventory("ws-b"))
    assert other.json() == {"hostname": "WS-A", "reported_hostname": "WS-B", "programs": 3,
                            "updates": 2}
    from models.db import session_scope
    from patchflow import fleet

    with session_scope(api.db_url) as session:
        rows = [(r["hostname"], r["reported_hostname"]) for r in fleet.list_endpoints(session)]
    assert rows == [("WS-A", "WS-B"), ("WS-B", "WS-B")]


def test_jobs_are_empty_and_results_for_unknown_jobs_are_404(
    api: Api, http: httpx.Client
) -> None:
    headers = api.enroll(http, "ws-jobs")
    assert http.get("/api/v1/agent/jobs", headers=headers).json() == []
    unknown = http.post("/api/v1/agent/jobs/41/result", headers=headers,
                        json={"state": "succeeded", "exit_code": 0})
    assert "no job 41" in json_error(unknown, 404)
    invalid = http.post("/api/v1/agent/jobs/41/result", headers=headers,
                        json={"state": "exploded"})
    assert "state" in json_error(invalid, 422)
    assert "job_id" in json_error(http.post("/api/v1/agent/jobs/x/result", headers=headers,
                                        json={"state": "failed"}), 422)


def test_roaming_is_decided_by_the_internal_networks(tmp_path: Path) -> None:
    """A server whose only internal network is 10/8 sees loopback agents as roaming."""
    from patchflow import fleet

    with running_api("sqlite", tmp_path, internal=fleet.internal_networks(["10.0.0.0/8"])) as api:
        with api.client() as client:
            headers = api.enroll(client, "ws-away")
            assert client.put("/api/v1/agent/inventory", headers=headers,
                              json=base_inventory("ws-away")).status_code == 200
        from models.db import session_scope

        with session_scope(api.db_url) as session:
            row = fleet.list_endpoints(session)[0]
        assert row["roaming"] is True


def test_polls_refresh_last_seen_at_most_every_few_minutes(api: Api, http: httpx.Client) -> None:
    from models.db import get_engine
    from patchflow import fleet

    headers = api.enroll(http, "ws-seen")
    engine = get_engine(api.db_url)
    old = dt.datetime(2026, 1, 1, 12, 0)

    def set_last_seen(value: dt.datetime) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE endpoints SET last_seen = :v, roaming = :r"),
                         {"v": value, "r": True})
        # Raw SQL is like another process: the server would see it within CACHE_SECONDS.
        fleet.forget_agents()

    def last_seen() -> tuple[dt.datetime, bool]:
        with engine.connect() as conn:
            row = conn.execute(sa.text("SELECT last_seen, roaming FROM endpoints")).one()
        value = row[0] if isinstance(row[0], dt.datetime) else dt.datetime.fromisoformat(row[0])
        return value.replace(tzinfo=None), bool(row[1])

    set_last_seen(dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=30))
    recent = last_seen()
    assert http.get("/api/v1/agent/jobs", headers=headers).status_code == 200
    assert last_seen() == recent  # seen half a minute ago: no write
    set_last_seen(old)
    assert http.get("/api/v1/agent/jobs", headers=headers).status_code == 200
    seen, roaming = last_seen()
    assert seen > old + dt.timedelta(days=1) and roaming is False  # loopback is internal
