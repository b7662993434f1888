"""The credentials cache's cross-process rule on SQLite and MariaDB: entries stay while the
credentials generation is unchanged, all go when another process changed it, and a row read
before such a change is never put back after it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import sqlalchemy as sa

from patchflow.fleet import agent_cache
from patchflow.fleet.agent_cache import AgentCache, CachedAgent, bump_generation


def _entry(endpoint_id: int) -> CachedAgent:
    return CachedAgent(endpoint_id=endpoint_id, hostname=f"WS-{endpoint_id}", secret_hash="h",
                       revoked=False, pending=False, last_seen=None, last_ip=None,
                       inventory_sha256=None, inventory_at=None, reported_hostname=None)


@pytest.fixture
def engine(db_url: str) -> sa.Engine:
    from models.db import get_engine

    return get_engine(db_url)


def test_entries_live_until_the_generation_changes(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 0.0)  # every get needs a confirm first
    cache = AgentCache()
    assert cache.get("a") is None  # never confirmed: nothing is trusted
    cache.confirm(engine)
    cache.put("a", _entry(1), cache.epoch)
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    assert cache.get("a") == _entry(1)
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 0.0)
    cache.confirm(engine)  # same generation: the entry stays, however old
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    assert cache.get("a") == _entry(1)

    with engine.begin() as conn:  # another process changes credentials
        bump_generation(conn)
    assert cache.get("a") == _entry(1)  # not seen before the next confirm...
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 0.0)
    cache.confirm(engine)
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    assert cache.get("a") is None  # ...and everything goes at it


def test_a_row_read_before_a_drop_is_not_put_after_it() -> None:
    cache = AgentCache()
    before = cache.epoch
    cache.forget()  # a commit here revoked someone while a thread was reading its row
    cache.put("a", _entry(1), before)
    cache.put("b", _entry(2), cache.epoch)
    assert cache._agents == {"b": _entry(2)}


def test_a_generation_bump_commits_or_rolls_back_with_its_transaction(engine: sa.Engine) -> None:
    from models import Setting

    read = sa.select(Setting.value).where(Setting.key == agent_cache.GENERATION_KEY)
    with engine.begin() as conn:
        bump_generation(conn)
    with engine.connect() as conn:
        first = conn.execute(read).scalar_one()
    with engine.connect() as conn, conn.begin() as tx:
        bump_generation(conn)
        assert conn.execute(read).scalar_one() != first
        tx.rollback()
    with engine.begin() as conn:
        assert conn.execute(read).scalar_one() == first
        bump_generation(conn)  # an existing row is replaced, never a second one
        assert len(conn.execute(read).all()) == 1


def test_the_oldest_half_goes_past_the_size_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_cache, "MAX_AGENTS", 4)
    cache = AgentCache()
    for n in range(4):
        cache.put(str(n), dataclasses.replace(_entry(n), loaded=float(n)), cache.epoch)
    cache.put("new", _entry(9), cache.epoch)
    assert sorted(cache._agents) == ["2", "3", "new"]


def test_a_change_made_here_drops_the_entries_once(
    engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process that changes credentials drops its entries at the commit and takes the
    generation it wrote as known: its next confirm keeps the entries read since, instead of
    dropping every agent a second time. Another process's change after it still drops them."""
    from models import Endpoint
    from models.db import session_scope

    with session_scope(db_url) as session:
        endpoint = Endpoint(hostname="WS-GEN", revoked=False, hotpatch=False,
                            pending_reboot=False, roaming=False, scan_state="Not Scanned")
        session.add(endpoint)
    cache = agent_cache.agents_of(engine)
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 0.0)
    cache.confirm(engine)
    cache.put("old", _entry(1), cache.epoch)
    with session_scope(db_url) as session:  # a revocation made in this process
        session.execute(sa.update(Endpoint).where(Endpoint.hostname == "WS-GEN")
                        .values(revoked=True))
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    assert cache.get("old") is None  # dropped at the commit
    cache.put("new", _entry(2), cache.epoch)  # read after it
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 0.0)
    cache.confirm(engine)  # the generation this process wrote: nothing more to drop
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    assert cache.get("new") == _entry(2)

    with engine.begin() as conn:  # then another process changes credentials
        bump_generation(conn)
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 0.0)
    cache.confirm(engine)
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    assert cache.get("new") is None


def test_a_change_drops_the_agents_of_its_own_database_only(
    engine: sa.Engine, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process serving (or testing against) two databases keeps one cache each: revoking an
    agent of one leaves the other's agents in memory, so their polls and unchanged uploads are
    still answered without a query."""
    from models import Endpoint
    from models.db import get_engine, session_scope
    from models.migrate import upgrade

    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    upgrade(other_url)
    other = get_engine(other_url)
    with session_scope(db_url) as session:
        session.add(Endpoint(hostname="WS-ONE", revoked=False, hotpatch=False,
                             pending_reboot=False, roaming=False, scan_state="Not Scanned"))
    mine, theirs = agent_cache.agents_of(engine), agent_cache.agents_of(other)
    assert mine is not theirs
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 0.0)
    mine.confirm(engine)
    theirs.confirm(other)
    mine.put("a", _entry(1), mine.epoch)
    theirs.put("b", _entry(2), theirs.epoch)
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    with session_scope(db_url) as session:  # a revocation in the first database
        session.execute(sa.update(Endpoint).where(Endpoint.hostname == "WS-ONE")
                        .values(revoked=True))
    assert mine.get("a") is None
    assert theirs.get("b") == _entry(2)


def test_an_agent_batch_keeps_the_entries_and_a_file_import_drops_them(
    engine: sa.Engine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Storing agent uploads sets digests (the storing process updates its own entries), so a
    batch of them, one UPDATE for every endpoint, keeps what memory knows; a file import clears
    an endpoint's digest, and that drops the entries."""
    from models.db import session_scope
    from patchflow.fleet.inventories import Sighting, store_inventory, store_many
    from patchflow.fleet.inventory import Inventory
    from tests.fixtures.agent.harness import base_inventory

    docs = [Inventory.model_validate(base_inventory(name)) for name in ("WS-1", "WS-2")]
    with session_scope(db_url) as session:
        ids = [store_inventory(session, doc) for doc in docs]
    cache = agent_cache.agents_of(engine)
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 0.0)
    cache.confirm(engine)
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    cache.put("kept", _entry(ids[0]), cache.epoch)
    with session_scope(db_url) as session:
        store_many(session, [(doc, endpoint_id, Sighting("10.0.0.1"), f"{n:064x}")
                             for n, (doc, endpoint_id) in enumerate(zip(docs, ids, strict=True))])
    assert cache.get("kept") == _entry(ids[0])
    with session_scope(db_url) as session:
        store_inventory(session, docs[0])
    assert cache.get("kept") is None


def test_a_generation_due_is_read_by_one_caller_while_the_others_wait(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A burst of requests finding the generation due at once makes one read, not one each."""
    import threading

    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    cache = AgentCache()
    reads: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "settings" in statement:
            reads.append(statement)

    start = threading.Barrier(8)

    def confirm() -> None:
        start.wait()
        cache.confirm(engine)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        threads = [threading.Thread(target=confirm) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len(reads) == 1
    assert not cache.due()


def test_read_ahead_reads_before_expiry_and_only_then(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ahead` reads the generation (and the work index) that many seconds before they expire,
    so a server under load never lets them expire; otherwise nothing is read."""
    import time

    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    cache = AgentCache()
    cache.confirm(engine)
    confirmed = cache._confirmed
    assert not cache.due(ahead=1.0)
    cache.confirm(engine, ahead=1.0)  # 60 s to go: nothing to read
    assert cache._confirmed == confirmed
    assert cache.due(ahead=60.0)
    cache.confirm(engine, ahead=60.0)  # due that far ahead: read again, still fresh
    assert cache._confirmed > confirmed

    index = agent_cache.WorkIndex()
    loads: list[float] = []

    def load() -> set[int]:
        loads.append(time.monotonic())
        return {7}

    assert index.due() and not index.known_idle(1)  # never read: nothing known
    index.refresh(load)
    assert len(loads) == 1 and index.known_idle(1) and not index.known_idle(7)
    index.refresh(load, ahead=1.0)
    assert len(loads) == 1  # fresh for a minute yet
    index.refresh(load, ahead=60.0)
    assert len(loads) == 2
    assert index.has_work(7, load) and len(loads) == 2


def test_a_read_begun_before_this_process_committed_a_generation_does_not_undo_it(
    engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generation read (ahead of expiry, beside the requests) may begin before this process
    commits a credentials change of its own and return the generation from before it. Taken
    as another process's change, it dropped every agent again, and the next read once more."""
    monkeypatch.setattr(agent_cache, "CACHE_SECONDS", 60.0)
    cache = AgentCache()
    with engine.begin() as conn:
        bump_generation(conn)
    cache.confirm(engine)

    def commit_meanwhile(conn: object, cursor: object, statement: str, *args: object) -> None:
        if "settings" in statement:  # the read has begun; this process commits a change
            cache.forget()
            cache.adopt("written-by-this-process")
            cache.put("a", _entry(1), cache.epoch)

    sa.event.listen(engine, "before_cursor_execute", commit_meanwhile)
    try:
        cache.confirm(engine, ahead=60.0)  # reads the generation from before the change
    finally:
        sa.event.remove(engine, "before_cursor_execute", commit_meanwhile)
    assert cache.get("a") == _entry(1)
    assert cache._generation == "written-by-this-process"
