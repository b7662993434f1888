"""Storing inventories on both databases: every value comes back as the document gave it (the
rows go through one JSON statement, not one row each), the inventory pack a scan reads holds the
same values in the document's order, a new document rewrites only the rows that differ, and the
upload digest agrees with the agent's."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from sqlalchemy import select

from agent.transport import inventory_digest
from models import InstalledProgram, InstalledUpdate, InventoryPack, bulk
from models.db import session_scope
from patchflow.fleet.inventories import body_digest, store_inventory, store_many
from patchflow.fleet.inventory import Inventory
from patchflow.fleet.programs_pack import unpack
from tests.fixtures.agent.harness import base_inventory

# Text a hand-built statement would get wrong: quotes, backslashes, JSON escapes, NUL, control
# characters, a literal "%", astral-plane characters, and values at their column's limit.
AWKWARD = ["O'Brien \"quoted\" \\ back\\slash", "tab\tnew\nline\r\x1a \x00 end", "100% \\u0041 %s",
           "Café 日本語 \U0001F600", "x" * 512, "'); DROP TABLE installed_programs; --"]


def _document(hostname: str) -> dict[str, Any]:
    doc = base_inventory(hostname, programs=len(AWKWARD) + 2)
    for program, name in zip(doc["programs"], AWKWARD, strict=False):
        program["name"] = name
    last = doc["programs"][-1]
    last.update(version=None, publisher="P" * 255, product_code=None, upgrade_code="u" * 64,
                arch=None, scope=None, install_date=None)
    doc["programs"][-2]["install_date"] = "20240229"
    doc["programs"].append(dict(doc["programs"][0]))  # a duplicate is kept: two rows
    return doc


Stored = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]


def _sorted(rows: Any) -> list[tuple[Any, ...]]:
    return sorted((tuple(r) for r in rows), key=repr)  # a multiset: duplicates kept


def _stored(session: Any, endpoint_id: int) -> Stored:
    """(programs as a multiset, the pack's programs in its order, updates)."""
    p = InstalledProgram
    programs = session.execute(
        select(p.name, p.version, p.publisher, p.product_code, p.upgrade_code, p.arch, p.scope,
               p.install_date).where(p.endpoint_id == endpoint_id)).all()
    packed = unpack(session.scalar(select(InventoryPack.programs)
                                   .where(InventoryPack.endpoint_id == endpoint_id)))
    assert packed is not None
    u = InstalledUpdate
    updates = session.execute(select(u.kb, u.installed_on).where(u.endpoint_id == endpoint_id)
                              .order_by(u.kb)).all()
    return _sorted(programs), list(zip(*packed, strict=True)), [tuple(r) for r in updates]


def _expected(doc: Inventory) -> Stored:
    programs = [(p.name, p.version, p.publisher, p.product_code, p.upgrade_code, p.arch, p.scope,
                 p.install_date) for p in doc.programs]
    updates = sorted((u.kb, u.installed_on) for u in doc.unique_updates())
    # The pack a scan reads: the scan columns in the document's order.
    return _sorted(programs), [row[:6] for row in programs], updates


@pytest.mark.parametrize("chunk", [None, 600])
def test_stored_rows_are_the_documents(home: Any, db_url: str, chunk: int | None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if chunk is not None:
        # Small statements: the rows are split across several, still in order.
        monkeypatch.setattr(bulk, "_JSON_CHUNK", chunk)
    docs = [Inventory.model_validate(_document(name)) for name in ("WS-A", "WS-B")]
    with session_scope(db_url) as session:
        ids = [store_inventory(session, doc) for doc in docs]
    with session_scope(db_url) as session:
        for endpoint_id, doc in zip(ids, docs, strict=True):
            assert _stored(session, endpoint_id) == _expected(doc)
    first = docs[0].programs
    assert first[-3].install_date == dt.date(2024, 2, 29) and first[-1].name == AWKWARD[0]

    # Several endpoints in one batch (the group commit), the second one named twice:
    # its last document wins; an empty inventory leaves no rows.
    empty = Inventory.model_validate(dict(_document("WS-B"), programs=[], updates=[]))
    reverse = _document("WS-A")["programs"][::-1]
    swapped = Inventory.model_validate(dict(_document("WS-A"), programs=reverse))
    with session_scope(db_url) as session:
        store_many(session, [(swapped, ids[0], None, None), (docs[1], ids[1], None, None),
                             (empty, ids[1], None, None)])
    with session_scope(db_url) as session:
        assert _stored(session, ids[0]) == _expected(swapped)
        assert _stored(session, ids[1]) == ([], [], [])


def test_body_digest_is_the_agents() -> None:
    doc = _document("WS-A")
    doc["programs"][1]["name"] = "Café 日本語 \U0001F600 \u2028"
    for body in (json.dumps(doc).encode(), json.dumps(doc, ensure_ascii=False, indent=2).encode()):
        assert body_digest(body) == inventory_digest(json.loads(body))
    assert body_digest(b"[1, 2]") is None and body_digest(b"{") is None


def _row_ids(session: Any, endpoint_id: int) -> dict[tuple[Any, ...], list[int]]:
    p = InstalledProgram
    ids: dict[tuple[Any, ...], list[int]] = {}
    for row_id, name, version in session.execute(
            select(p.id, p.name, p.version).where(p.endpoint_id == endpoint_id).order_by(p.id)):
        ids.setdefault((name, version), []).append(row_id)
    return ids


def test_a_new_document_rewrites_only_the_rows_that_differ(home: Any, db_url: str) -> None:
    doc = _document("WS-A")
    with session_scope(db_url) as session:
        endpoint_id = store_inventory(session, Inventory.model_validate(doc))
    with session_scope(db_url) as session:
        before = _row_ids(session, endpoint_id)
    changed = json.loads(json.dumps(doc))
    changed["programs"][2]["version"] = "99.0"  # one program upgraded
    changed["programs"].pop()  # one of the two duplicates uninstalled
    changed["programs"].append({"name": "New App", "version": "1.0"})
    changed["updates"][0]["installed_on"] = "2024-03-01"  # same KB, another date
    changed["updates"].pop()
    new = Inventory.model_validate(changed)
    with session_scope(db_url) as session:
        store_many(session, [(new, endpoint_id, None, None)])
    with session_scope(db_url) as session:
        assert _stored(session, endpoint_id) == _expected(new)
        after = _row_ids(session, endpoint_id)
    upgraded = (doc["programs"][2]["name"], doc["programs"][2]["version"])
    duplicate = (doc["programs"][0]["name"], doc["programs"][0]["version"])
    kept = {key: ids for key, ids in before.items() if key not in (upgraded, duplicate)}
    # The untouched rows are the same rows; one of the duplicates stays.
    assert {key: after[key] for key in kept} == kept
    assert len(after[duplicate]) == 1 and after[duplicate][0] in before[duplicate]
    # The new and changed ones are new rows.
    fresh = max(i for ids in before.values() for i in ids)
    assert after[("New App", "1.0")][0] > fresh
    assert after[(upgraded[0], "99.0")][0] > fresh and upgraded not in after


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
def test_stored_rows_too_long_to_read_back_are_replaced_whole(home: Any, db_url: str) -> None:
    """MariaDB cuts an aggregate at group_concat_max_len: the cut array is not trusted, and the
    endpoint's rows are replaced whole instead of compared."""
    doc = Inventory.model_validate(_document("WS-A"))
    with session_scope(db_url) as session:
        endpoint_id = store_inventory(session, doc)
    changed = _document("WS-A")
    changed["programs"][3]["version"] = "99.0"
    new = Inventory.model_validate(changed)
    with session_scope(db_url) as session:
        session.connection().exec_driver_sql("SET SESSION group_concat_max_len = 200")
        assert bulk.stored_groups(session, InstalledProgram.__table__, "endpoint_id",
                                  [endpoint_id], ["name"]) == {endpoint_id: None}
        store_many(session, [(new, endpoint_id, None, None)])
        session.connection().exec_driver_sql("SET SESSION group_concat_max_len = DEFAULT")
    with session_scope(db_url) as session:
        assert _stored(session, endpoint_id) == _expected(new)


def test_rows_go_in_one_statement_whatever_their_number(home: Any, db_url: str) -> None:
    """One statement per table, not one per row: on SQLite each row of an executemany hands
    the GIL over and waits to win it back while other uploads are being validated."""
    from sqlalchemy import event

    from models.db import get_engine

    doc = base_inventory("WS-MANY", programs=300)
    inserts: list[tuple[str, bool]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO"):
            inserts.append((statement.split("(")[0].split()[-1].strip('`"'), executemany))

    engine = get_engine(db_url)
    event.listen(engine, "before_cursor_execute", record)
    try:
        with session_scope(db_url) as session:
            endpoint_id = store_inventory(session, Inventory.model_validate(doc))
    finally:
        event.remove(engine, "before_cursor_execute", record)
    programs = [table for table, _many in inserts if table == "installed_programs"]
    assert programs == ["installed_programs"]
    assert ("installed_programs", False) in inserts
    with session_scope(db_url) as session:
        assert len(_stored(session, endpoint_id)[0]) == 300


def test_a_batch_of_agent_uploads_gives_each_endpoint_its_own_values(
        home: Any, db_url: str) -> None:
    """The group commit's endpoint rows: on MariaDB one UPDATE for the batch (one per endpoint
    was a round trip each), on SQLite one executemany (one statement executed per endpoint in
    the driver's C loop); either way each endpoint gets its own document's values."""
    from sqlalchemy import event

    from models import Endpoint
    from models.db import get_engine
    from patchflow.fleet.inventories import Sighting
    from patchflow.fleet.network import internal_networks

    docs = [Inventory.model_validate(_document(name)) for name in ("WS-A", "WS-B", "WS-C")]
    with session_scope(db_url) as session:
        ids = [store_inventory(session, doc) for doc in docs]
    with session_scope(db_url) as session:
        revisions = dict(session.execute(select(Endpoint.id, Endpoint.inventory_rev)).all())
    office = internal_networks(["10.1.0.0/16"])
    uploads = []
    for n, (doc, endpoint_id) in enumerate(zip(docs, ids, strict=True)):
        raw = _document(doc.hostname)
        raw["os"]["ubr"] = 1000 + n
        raw["pending_reboot"] = n == 1
        raw["domain"] = None if n == 2 else f"d{n}.example"
        ip = "10.1.2.3" if n == 0 else f"192.0.2.{n}"
        uploads.append((Inventory.model_validate(raw), endpoint_id, Sighting(ip, office),
                        f"{n:064x}"))
    updates: list[bool] = []  # executemany, per UPDATE sent

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE ENDPOINTS"):
            updates.append(executemany)

    engine = get_engine(db_url)
    event.listen(engine, "before_cursor_execute", record)
    try:
        with session_scope(db_url) as session:
            store_many(session, uploads[::-1])
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert updates == [not db_url.startswith("mysql")]
    with session_scope(db_url) as session:
        for n, endpoint_id in enumerate(ids):
            row = session.get(Endpoint, endpoint_id)
            assert row is not None
            assert (row.os_ubr, row.pending_reboot, row.domain) == (
                1000 + n, n == 1, None if n == 2 else f"d{n}.example")
            assert row.last_ip == ("10.1.2.3" if n == 0 else f"192.0.2.{n}")
            assert row.roaming is (n != 0)
            assert row.inventory_sha256 == f"{n:064x}"
            assert row.inventory_rev == revisions[endpoint_id] + 1
            assert row.last_seen is not None and row.last_seen.tzinfo is not None
