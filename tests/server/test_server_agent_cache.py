"""The agent channel's fast paths over real HTTPS on loopback, on SQLite and MariaDB: an
unchanged inventory is answered without writing, an idle poll makes no database query, and
neither cache hides a dispatch or a revocation."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.fixtures.agent.harness import (
    Api,
    api_on_both_databases,
    base_inventory,
    wait_rescanned,
)
from tests.support.spies import spy

api = api_on_both_databases("agent-cache")


@pytest.fixture
def http(api: Api) -> Iterator[httpx.Client]:
    from patchflow import fleet

    api.reset()
    fleet.forget_agents()
    fleet.work_changed()
    with api.client() as client:
        yield client


class Statements:
    """Every statement the server's own engine sends, from a SQLAlchemy event listener."""

    def __init__(self, api: Api) -> None:
        from models.db import get_engine

        self.engine = get_engine(api.db_url)
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        with self._lock:
            self.seen.append(" ".join(statement.split())[:120])

    def __enter__(self) -> Statements:
        from patchflow.scanning.service import RESCANS

        # The rescan an earlier upload queued runs in the background: let it finish first.
        assert RESCANS.wait_idle(30)
        sa.event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self._record)

    def credential_reads(self) -> list[str]:
        """The credentials query (fleet.agents._CREDENTIALS), named by a column read near the
        start of the statement: only its first 120 characters are kept."""
        return [s for s in self.seen if s.startswith("SELECT") and "endpoints.secret_hash" in s]

    def writes(self) -> list[str]:
        return [s for s in self.seen if s.split(" ", 1)[0].upper() in ("INSERT", "UPDATE",
                                                                         "DELETE")]


def _conditional(headers: dict[str, str], doc: dict[str, Any]) -> dict[str, str]:
    from agent.transport import inventory_digest

    return {**headers, "If-None-Match": f'"{inventory_digest(doc)}"'}


def _program_rows(api: Api) -> list[tuple[int, str]]:
    from models.db import get_engine

    with get_engine(api.db_url).connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(
            sa.text("SELECT id, name FROM installed_programs ORDER BY id"))]


def test_unchanged_inventory_is_answered_without_writing(api: Api, http: httpx.Client) -> None:
    headers = api.enroll(http, "ws-same")
    doc = base_inventory("ws-same", 4)
    first = http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc), json=doc)
    assert first.status_code == 200, first.text
    assert "unchanged" not in first.json()
    stored = _program_rows(api)
    assert len(stored) == 4
    wait_rescanned(api, "WS-SAME")

    # Collected again later: only collected_at differs, which the digest leaves out.
    again = {**doc, "collected_at": "2026-12-01T09:30:00Z"}
    with Statements(api) as statements:
        for _ in range(3):
            response = http.put("/api/v1/agent/inventory",
                                headers=_conditional(headers, again), json=again)
            assert response.status_code == 200, response.text
            assert response.json() == {"hostname": "WS-SAME", "reported_hostname": "WS-SAME",
                                       "programs": 4, "updates": 2, "unchanged": True}
    # At most the one-row refresh of inventory_at/last_seen (once a second): no row of the
    # inventory is deleted or inserted.
    writes = statements.writes()
    assert all(w.upper().startswith("UPDATE ENDPOINTS SET") for w in writes), writes
    assert len(statements.writes()) <= 3
    assert _program_rows(api) == stored  # the very same rows, not rewritten

    # A changed inventory is still stored, whole.
    changed = base_inventory("ws-same", 6)
    response = http.put("/api/v1/agent/inventory", headers=_conditional(headers, changed),
                        json=changed)
    assert response.status_code == 200 and "unchanged" not in response.json()
    assert len(_program_rows(api)) == 6
    # Naming the old digest no longer matches: the old document is stored again.
    back = http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc), json=doc)
    assert back.json()["programs"] == 4 and "unchanged" not in back.json()
    assert len(_program_rows(api)) == 4
    # Without the header (an older agent) every upload is stored as before.
    plain = http.put("/api/v1/agent/inventory", headers=headers, json=doc)
    assert plain.status_code == 200 and "unchanged" not in plain.json()
    assert [r[1] for r in _program_rows(api)] == [r[1] for r in stored]


def test_unchanged_inventory_still_refreshes_inventory_at_now_and_then(
    api: Api, http: httpx.Client
) -> None:
    from models.db import get_engine
    from patchflow import fleet

    headers = api.enroll(http, "ws-stamp")
    doc = base_inventory("ws-stamp", 2)
    assert http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc),
                    json=doc).status_code == 200
    stored = _program_rows(api)
    engine = get_engine(api.db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE endpoints SET inventory_at = :t"),
                     {"t": dt.datetime(2026, 1, 1)})
    fleet.forget_agents()  # raw SQL is like another process
    response = http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc), json=doc)
    assert response.json()["unchanged"] is True
    with engine.connect() as conn:
        stamp = conn.execute(sa.text("SELECT inventory_at FROM endpoints")).scalar_one()
    assert str(stamp) > "2026-06-01"  # the cycle's verification sees a fresh inventory
    assert _program_rows(api) == stored


def test_unchanged_uploads_due_their_touch_are_answered_and_touched_without_a_new_revision(
    api: Api, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In a real fleet an agent's uploads are hours apart, so every unchanged one is due its
    touch (inventory_at, which the patch cycle's verification waits for). Memory still answers
    them, the touches go to the inventory writer with whatever uploads arrive together, and no
    new inventory revision is made: there is nothing new to scan."""
    from models.db import get_engine
    from patchflow import fleet
    from patchflow.fleet import agent_cache, inventories

    names = [f"ws-touch-{n}" for n in range(6)]
    agents = {name: api.enroll(http, name) for name in names}
    docs = {name: base_inventory(name, 3) for name in names}
    for name in names:
        assert http.put("/api/v1/agent/inventory", headers=_conditional(agents[name], docs[name]),
                        json=docs[name]).status_code == 200
    engine = get_engine(api.db_url)
    query = sa.text("SELECT hostname, inventory_at, inventory_rev, last_ip FROM endpoints "
                    "WHERE hostname LIKE 'WS-TOUCH-%'")
    with engine.begin() as conn:  # behind memory's back: only the touch can bring it forward
        conn.execute(sa.text("UPDATE endpoints SET inventory_at = :t "
                             "WHERE hostname LIKE 'WS-TOUCH-%'"), {"t": dt.datetime(2026, 1, 1)})
        revisions = {row.hostname: row.inventory_rev for row in conn.execute(query)}
    monkeypatch.setattr(inventories, "UNCHANGED_TOUCH", dt.timedelta(0))  # every one is due
    # However slow the setup, memory's digests stay fresh enough to answer.
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 3600.0)
    slow: list[str] = []  # the route's way: a transaction each, from a worker thread
    monkeypatch.setattr(fleet, "unchanged_inventory",
                        lambda *args, **kwargs: slow.append("called"))
    answers: dict[str, Any] = {}
    start = threading.Barrier(len(names))

    def upload(name: str) -> None:
        with api.client() as client:
            start.wait()
            answers[name] = client.put("/api/v1/agent/inventory",
                                       headers=_conditional(agents[name], docs[name]),
                                       json=docs[name]).json()

    threads = [threading.Thread(target=upload, args=(name,)) for name in names]
    with Statements(api) as statements:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert {name: answers.get(name, {}).get("unchanged") for name in names} == dict.fromkeys(
        names, True)
    assert slow == []
    assert all(answers[name]["programs"] == 3 for name in names)
    assert statements.writes() and all(
        w.upper().startswith("UPDATE ENDPOINTS SET") for w in statements.writes())
    with engine.connect() as conn:
        rows = {row.hostname: row for row in conn.execute(query)}
    assert {host: str(row.inventory_at) > "2026-06-01" for host, row in rows.items()} == {
        name.upper(): True for name in names}
    assert {host: row.inventory_rev for host, row in rows.items()} == revisions
    assert {row.last_ip for row in rows.values()} == {"127.0.0.1"}


def test_a_digest_memory_read_long_ago_is_confirmed_with_the_touch(
    api: Api, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past CACHE_SECONDS the digest memory holds may be stale (another worker may have stored
    a newer inventory). The unchanged upload's touch confirms it under a row lock in the
    writer's batch, without the route's worker thread: still the stored one, the answer is
    "unchanged" and memory trusts the digest again; changed behind memory's back, the upload is
    stored whole, as the route stores an upload naming another digest."""
    from models.db import get_engine
    from patchflow import fleet
    from patchflow.fleet import agent_cache
    from patchflow.scanning.service import RESCANS

    headers = api.enroll(http, "ws-confirm")
    doc = base_inventory("ws-confirm", 3)
    assert http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc),
                    json=doc).status_code == 200
    slow = spy(monkeypatch, fleet, "unchanged_inventory")  # the route's way
    # The rescan the first upload queued writes in the background: let it finish, so that the
    # touch below does not meet it.
    assert RESCANS.wait_idle(30)
    engine = get_engine(api.db_url)
    cache = agent_cache.agents_of(engine)
    agent_id = headers["X-Agent-Id"]

    def read_long_ago() -> None:
        cache.confirm(engine)  # the fleet's credentials generation is current
        cache.update(agent_id, loaded=time.monotonic() - 10 * agent_cache.CACHE_SECONDS)

    read_long_ago()
    again = http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc), json=doc)
    assert again.status_code == 200 and again.json()["unchanged"] is True
    assert slow == []
    entry = cache.get(agent_id)
    assert entry is not None and agent_cache.digest_fresh(entry)

    # Another process stores another inventory (its digest) behind this one's memory.
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE endpoints SET inventory_sha256 = :d "
                             "WHERE hostname = 'WS-CONFIRM'"), {"d": "e" * 64})
    read_long_ago()
    bigger = base_inventory("ws-confirm", 5)
    stale = http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc),
                     json=bigger)  # names the digest memory holds, sends another body
    assert stale.status_code == 200, stale.text
    assert "unchanged" not in stale.json() and stale.json()["programs"] == 5
    assert len(_program_rows(api)) == 5


def test_a_stale_digest_is_read_again_only_to_confirm_a_match(
    api: Api, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past CACHE_SECONDS another worker may have stored a newer inventory. An upload naming the
    digest memory holds reads it again before answering "unchanged"; one naming another digest
    is stored without that read (storing is right whatever was stored meanwhile): under a burst
    of changed uploads those reads took pool connections past the pool's size."""
    from models.db import get_engine
    from patchflow.fleet import agent_cache

    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 1.0)
    headers = api.enroll(http, "ws-stale")
    doc, changed = base_inventory("ws-stale", 4), base_inventory("ws-stale", 5)
    assert http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc),
                    json=doc).status_code == 200
    wait_rescanned(api, "WS-STALE")
    time.sleep(1.2)  # the entry's digest is stale now
    with Statements(api) as statements:
        response = http.put("/api/v1/agent/inventory", headers=_conditional(headers, changed),
                            json=changed)
        assert response.status_code == 200 and "unchanged" not in response.json()
    assert statements.credential_reads() == [], statements.seen
    assert len(_program_rows(api)) == 5
    wait_rescanned(api, "WS-STALE")

    # Another process stores the 4-program document meanwhile (as the agent's next upload
    # would through another worker) and this worker's memory still names the 5-program one.
    from agent.transport import inventory_digest

    with get_engine(api.db_url).begin() as conn:
        conn.execute(sa.text("UPDATE endpoints SET inventory_sha256 = :d "
                             "WHERE hostname = 'WS-STALE'"), {"d": inventory_digest(doc)})
    time.sleep(1.2)
    # Naming the digest memory holds: read again, found replaced, so stored, not "unchanged".
    with Statements(api) as statements:
        again = http.put("/api/v1/agent/inventory", headers=_conditional(headers, changed),
                         json=changed)
    assert again.status_code == 200 and "unchanged" not in again.json(), again.text
    assert statements.credential_reads(), statements.seen
    assert len(_program_rows(api)) == 5


def test_a_file_import_clears_the_digest(api: Api, http: httpx.Client, tmp_path: Path,
                                         cli: Any) -> None:
    import json

    headers = api.enroll(http, "ws-import")
    doc = base_inventory("ws-import", 3)
    assert http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc),
                    json=doc).status_code == 200
    other = base_inventory("ws-import", 1)
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(other), encoding="utf-8")
    result = cli("endpoints", "import", str(path))
    assert result.code == 0, result.err
    assert len(_program_rows(api)) == 1
    # The agent's next upload names its old digest: the imported rows must not be kept.
    response = http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc), json=doc)
    assert "unchanged" not in response.json()
    assert len(_program_rows(api)) == 3


def test_an_idle_poll_makes_no_database_query(
    api: Api, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from patchflow.fleet import agent_cache

    # However slow this machine is today, the 20 polls happen within the caches' lifetime.
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    headers = api.enroll(http, "ws-idle")
    assert http.get("/api/v1/agent/jobs", headers=headers).json() == []  # fills the caches
    # Another agent's inventory being stored is no reason to forget this one.
    other = api.enroll(http, "ws-busy")
    doc = base_inventory("ws-busy", 3)
    assert http.put("/api/v1/agent/inventory", headers=_conditional(other, doc),
                    json=doc).status_code == 200
    with Statements(api) as statements:
        for _ in range(20):
            response = http.get("/api/v1/agent/jobs", headers=headers)
            assert response.status_code == 200 and response.json() == []
    assert statements.seen == []
    # Wrong secrets are still refused from the cache, compared in constant time.
    wrong = {**headers, "Authorization": "Bearer not-the-secret"}
    assert http.get("/api/v1/agent/jobs", headers=wrong).status_code == 401


def _pending_item(api: Api, hostname: str) -> tuple[int, int]:
    from models import InstallJob, InstallJobItem, Patch
    from models.db import session_scope
    from patchflow import fleet
    from patchflow.install.installers import WUA

    with session_scope(api.db_url) as session:
        endpoint = fleet.get_endpoint(session, hostname)
        patch = Patch(source="msrc", ukey="KB5099999", kb="KB5099999", title="Security update",
                      vendor="Microsoft", category="Security Updates")
        job = InstallJob(created_by="tests", status="running")
        session.add_all([patch, job])
        session.flush()
        item = InstallJobItem(job_id=job.id, endpoint_id=endpoint.id, patch_id=patch.id,
                              state="pending", installer_type=WUA)
        session.add(item)
        session.flush()
        return job.id, item.id


def test_dispatch_makes_work_visible_at_the_next_poll(api: Api, http: httpx.Client) -> None:
    from patchflow.install.dispatch import dispatch

    headers = api.enroll(http, "ws-work")
    job_id, item_id = _pending_item(api, "WS-WORK")
    assert http.get("/api/v1/agent/jobs", headers=headers).json() == []  # pending: not offered
    assert http.get("/api/v1/agent/jobs", headers=headers).json() == []  # answered from memory
    assert dispatch(job_id)["dispatched"] == 1
    jobs = http.get("/api/v1/agent/jobs", headers=headers).json()
    assert [(j["id"], j["job_id"], j["patch"]["kb"]) for j in jobs] == [
        (item_id, job_id, "KB5099999")]


def test_work_dispatched_by_another_process_shows_within_seconds(
    api: Api, http: httpx.Client
) -> None:
    from models.db import get_engine
    from patchflow.fleet.agent_cache import CACHE_SECONDS

    headers = api.enroll(http, "ws-elsewhere")
    _job_id, item_id = _pending_item(api, "WS-ELSEWHERE")
    assert http.get("/api/v1/agent/jobs", headers=headers).json() == []
    with get_engine(api.db_url).begin() as conn:  # what a flow run in another process does
        conn.execute(sa.text("UPDATE install_job_items SET state = 'dispatched', attempts = 1"))
    time.sleep(CACHE_SECONDS + 0.2)
    assert [j["id"] for j in http.get("/api/v1/agent/jobs", headers=headers).json()] == [item_id]


def test_revocation_takes_effect_through_the_cache(api: Api, http: httpx.Client, cli: Any) -> None:
    from models.db import get_engine
    from patchflow.fleet.agent_cache import CACHE_SECONDS, bump_generation

    here = api.enroll(http, "ws-here")
    elsewhere = api.enroll(http, "ws-elsewhere")
    doc = base_inventory("ws-here", 2)
    for headers in (here, elsewhere):
        for _ in range(2):  # the second answer comes from memory
            assert http.get("/api/v1/agent/jobs", headers=headers).status_code == 200
    assert http.put("/api/v1/agent/inventory", headers=_conditional(here, doc),
                    json=doc).status_code == 200
    # In this process (the CLI, the admin API): at once, for polls and unchanged uploads.
    assert cli("endpoints", "revoke", "ws-here").code == 0
    assert http.get("/api/v1/agent/jobs", headers=here).status_code == 403
    assert http.put("/api/v1/agent/inventory", headers=_conditional(here, doc),
                    json=doc).status_code == 403
    # The revocation wrote a new credentials generation for the other processes...
    generation = _generation(api)
    assert generation is not None
    # ...and one from another process (raw SQL here, with the bump patchflow's listeners add to
    # such a transaction) takes effect within CACHE_SECONDS.
    with get_engine(api.db_url).begin() as conn:
        conn.execute(sa.text("UPDATE endpoints SET revoked = :r WHERE hostname = 'WS-ELSEWHERE'"),
                     {"r": True})
        bump_generation(conn)
    assert _generation(api) != generation
    time.sleep(CACHE_SECONDS + 0.2)
    assert http.get("/api/v1/agent/jobs", headers=elsewhere).status_code == 403


def _generation(api: Api) -> str | None:
    from models import Setting
    from models.db import get_engine
    from patchflow.fleet.agent_cache import GENERATION_KEY

    with get_engine(api.db_url).connect() as conn:
        return conn.execute(sa.select(Setting.value)
                            .where(Setting.key == GENERATION_KEY)).scalar()


def test_an_agent_polling_less_often_than_the_cache_lifetime_is_answered_from_memory(
    api: Api, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At fleet cadence (a poll a minute) every poll comes long after CACHE_SECONDS: the
    credentials stay in memory while no credentials changed, so the only query is the one
    generation read per CACHE_SECONDS, whatever the number of agents."""
    from models.db import get_engine
    from patchflow.fleet import agent_cache

    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 1.5)
    agents = [api.enroll(http, f"ws-slow-{n}") for n in range(3)]
    # An earlier test's credential change may still be unread: let the first polls read the
    # generation as it is now, so the only change the second polls can see is this test's.
    time.sleep(1.7)
    for headers in agents:
        assert http.get("/api/v1/agent/jobs", headers=headers).json() == []
    time.sleep(1.7)  # every entry older than CACHE_SECONDS, the generation due again
    with Statements(api) as statements:
        for headers in agents:
            assert http.get("/api/v1/agent/jobs", headers=headers).json() == []
    assert statements.credential_reads() == [], statements.seen
    assert any("settings" in s for s in statements.seen), statements.seen
    # A credential change in between (here: a revocation by another process) is still seen.
    with get_engine(api.db_url).begin() as conn:
        conn.execute(sa.text("UPDATE endpoints SET revoked = :r WHERE hostname = 'WS-SLOW-0'"),
                     {"r": True})
        agent_cache.bump_generation(conn)
    time.sleep(1.7)
    assert http.get("/api/v1/agent/jobs", headers=agents[0]).status_code == 403
    assert http.get("/api/v1/agent/jobs", headers=agents[1]).json() == []



def test_batched_inventory_writes_store_each_upload_and_isolate_a_bad_one(
    api: Api, http: httpx.Client
) -> None:
    """The group commit both databases use: concurrent
    uploads land together, an endpoint named twice keeps its last document, and an upload that
    cannot be stored fails alone."""
    from models.db import get_engine, session_scope
    from patchflow import fleet
    from patchflow.fleet.group_commit import InventoryBatcher
    from patchflow.fleet.inventory import Inventory

    names = [f"ws-batch-{n}" for n in range(6)]
    for name in names:
        api.enroll(http, name)
    with session_scope(api.db_url) as session:
        ids = {name: fleet.get_endpoint(session, name).id for name in names}
    batcher = InventoryBatcher(api.db_url)
    errors: dict[str, BaseException] = {}
    start = threading.Barrier(len(names) + 2)

    def upload(name: str, endpoint_id: int, programs: int) -> None:
        doc = Inventory.model_validate(base_inventory(name, programs))
        start.wait()
        try:
            batcher.store((doc, endpoint_id, fleet.Sighting("127.0.0.1"), f"{programs:064x}"))
        except Exception as exc:
            errors[name] = exc

    threads = [threading.Thread(target=upload, args=(name, ids[name], 2 + n))
               for n, name in enumerate(names)]
    threads.append(threading.Thread(target=upload, args=("ghost", 10**9, 1)))  # no endpoint
    threads.append(threading.Thread(target=upload, args=(names[0], ids[names[0]], 2)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert list(errors) == ["ghost"]
    with get_engine(api.db_url).connect() as conn:
        counts = dict(conn.execute(sa.text(
            "SELECT e.hostname, COUNT(p.id) FROM endpoints e LEFT JOIN installed_programs p "
            "ON p.endpoint_id = e.id GROUP BY e.hostname")).all())
        kbs = conn.execute(sa.text("SELECT COUNT(*) FROM installed_updates")).scalar_one()
    assert {name: counts[name.upper()] for name in names} == {
        name: 2 + n for n, name in enumerate(names)}
    assert kbs == 2 * len(names)


def test_the_memory_answers_read_credentials_as_the_routes_do(
    api: Api, http: httpx.Client
) -> None:
    """server.agent_fast_path reads the headers itself, before routing: a header the routes
    refuse must not be taken there, on a poll or an unchanged upload of an agent in memory."""
    headers = api.enroll(http, "ws-headers")
    doc = base_inventory("ws-headers", 2)
    assert http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc),
                    json=doc).status_code == 200
    for _ in range(2):  # the second of each is answered from memory
        assert http.get("/api/v1/agent/jobs", headers=headers).json() == []
        answer = http.put("/api/v1/agent/inventory", headers=_conditional(headers, doc), json=doc)
        assert answer.status_code == 200 and answer.json()["unchanged"] is True
    secret = headers["Authorization"].removeprefix("Bearer ")
    assert http.get("/api/v1/agent/jobs", headers={
        **headers, "Authorization": f"bearer {secret}"}).json() == []  # the scheme's case
    refused = [{"Authorization": f"Basic {secret}"}, {"Authorization": secret},
               {"Authorization": "Bearer"}, {"X-Agent-Id": ""},
               {"X-Agent-Id": headers["X-Agent-Id"] + "x"}]
    for change in refused:
        bad = {**headers, **change}
        assert http.get("/api/v1/agent/jobs", headers=bad).status_code == 401, change
        assert http.put("/api/v1/agent/inventory", headers=_conditional(bad, doc),
                        json=doc).status_code == 401, change


def test_a_known_agents_changed_uploads_are_stored_before_routing_and_errors_stay_the_routes(
    api: Api, http: httpx.Client, caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """server.agent_fast_path stores a changed inventory of an agent in memory itself, on the
    event loop (not by the route's `store_upload` in a worker thread); an upload it cannot
    store goes on to the route with its body, which answers the error as before and stores
    nothing."""
    import logging

    from server import agent_fast_path

    threaded = spy(monkeypatch, agent_fast_path, "store_upload")
    headers = api.enroll(http, "ws-changed")
    first = base_inventory("ws-changed", 3)
    assert http.put("/api/v1/agent/inventory", headers=headers, json=first).status_code == 200
    assert http.get("/api/v1/agent/jobs", headers=headers).json() == []  # in memory now
    caplog.set_level(logging.DEBUG, logger="patchflow.server")

    changed = base_inventory("ws-changed", 5)
    answer = http.put("/api/v1/agent/inventory", headers=_conditional(headers, changed),
                      json=changed)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"hostname": "WS-CHANGED", "reported_hostname": "WS-CHANGED",
                             "programs": 5, "updates": 2}
    assert len(_program_rows(api)) == 5
    assert "handed to the route" not in caplog.text
    assert threaded == []

    malformed = http.put("/api/v1/agent/inventory",
                         headers={**headers, "Content-Type": "application/json"},
                         content=b'{"hostname": "ws-changed", "programs": [')
    assert malformed.status_code == 400
    assert malformed.json()["error"].startswith("malformed JSON")
    invalid = http.put("/api/v1/agent/inventory", headers=headers,
                       json={**changed, "programs": "none"})
    assert invalid.status_code == 422
    assert "programs" in invalid.json()["error"]
    assert caplog.text.count("handed to the route") == 2
    assert len(_program_rows(api)) == 5  # nothing of either stored

    # The conditional answer still knows the stored one.
    again = http.put("/api/v1/agent/inventory", headers=_conditional(headers, changed),
                     json=changed)
    assert again.json()["unchanged"] is True


def test_a_known_agents_large_whole_upload_is_parsed_off_the_event_loop(
    api: Api, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole upload stored before routing is parsed on the event loop, unless its body is
    past LOOP_PARSE_BYTES: then in a worker thread, so a 20,000-program document does not hold
    every other request up. Stored alike either way."""
    import asyncio

    from server import agent_api

    on_loop: list[bool] = []
    original = agent_api._parsed

    def parsed(body: bytes) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return original(body)

    monkeypatch.setattr(agent_api, "_parsed", parsed)
    headers = api.enroll(http, "ws-large")
    assert http.put("/api/v1/agent/inventory", headers=headers,
                    json=base_inventory("ws-large", 2)).status_code == 200
    assert http.get("/api/v1/agent/jobs", headers=headers).json() == []  # in memory now
    on_loop.clear()
    assert http.put("/api/v1/agent/inventory", headers=headers,
                    json=base_inventory("ws-large", 3)).json()["programs"] == 3
    monkeypatch.setattr(agent_api, "LOOP_PARSE_BYTES", 100)
    answer = http.put("/api/v1/agent/inventory", headers=headers,
                      json=base_inventory("ws-large", 4))
    assert answer.status_code == 200, answer.text
    assert answer.json()["programs"] == 4
    assert on_loop == [True, False]
    assert len(_program_rows(api)) == 4


def test_the_caches_are_read_again_before_they_expire_and_no_request_goes_the_slow_way(
    api: Api, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left to expire, the credentials generation and the work index sent every request of
    that moment through the routes (a worker thread and queries each: a burst every
    CACHE_SECONDS under load). A request within REFRESH_AHEAD of their expiry starts one read
    of both and is answered from memory; one after they expired (an idle server) waits for
    that read, then is answered from memory too."""
    from patchflow.fleet import agent_cache
    from server import agent_api, agent_fast_path

    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 2.0)
    monkeypatch.setattr(agent_fast_path, "REFRESH_AHEAD", 1.5)
    headers = api.enroll(http, "ws-ahead")
    assert http.get("/api/v1/agent/jobs", headers=headers).json() == []  # fills the caches
    routed = spy(monkeypatch, agent_api, "_poll")
    refreshes = spy(monkeypatch, agent_fast_path.fleet, "refresh_caches")
    time.sleep(0.7)  # within REFRESH_AHEAD of expiring, not expired
    with Statements(api) as statements:
        assert http.get("/api/v1/agent/jobs", headers=headers).json() == []
        deadline = time.monotonic() + 10
        while not any("settings" in s for s in statements.seen) and time.monotonic() < deadline:
            time.sleep(0.05)  # the read runs beside the answer
    assert len(refreshes) == 1
    assert any("settings" in s for s in statements.seen), statements.seen
    assert statements.credential_reads() == [], statements.seen
    time.sleep(1.6)  # expired by the first read's clock, fresh by the read ahead
    assert http.get("/api/v1/agent/jobs", headers=headers).json() == []
    time.sleep(2.2)  # expired by every clock: an idle server
    with Statements(api) as statements:
        assert http.get("/api/v1/agent/jobs", headers=headers).json() == []
    assert any("settings" in s for s in statements.seen), statements.seen
    assert statements.credential_reads() == [], statements.seen
    assert routed == []
