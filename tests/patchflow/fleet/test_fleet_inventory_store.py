"""Storing inventories on both databases: every value comes back as the document gave it, in the
document's order (MariaDB writes the rows through one JSON_TABLE statement, not one row each),
the inventory pack a scan reads holds the same values, and the upload digest agrees with the
agent's."""

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


def _stored(session: Any, endpoint_id: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    p = InstalledProgram
    programs = session.execute(
        select(p.name, p.version, p.publisher, p.product_code, p.upgrade_code, p.arch, p.scope,
               p.install_date).where(p.endpoint_id == endpoint_id).order_by(p.id)).all()
    # The inventory pack written with the rows is those rows' scan columns, in the same order.
    packed = unpack(session.scalar(select(InventoryPack.programs)
                                   .where(InventoryPack.endpoint_id == endpoint_id)))
    assert packed is not None
    assert list(zip(*packed, strict=True)) == [tuple(r)[:6] for r in programs]
    u = InstalledUpdate
    updates = session.execute(select(u.kb, u.installed_on).where(u.endpoint_id == endpoint_id)
                              .order_by(u.kb)).all()
    return [tuple(r) for r in programs], [tuple(r) for r in updates]


def _expected(doc: Inventory) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    programs = [(p.name, p.version, p.publisher, p.product_code, p.upgrade_code, p.arch, p.scope,
                 p.install_date) for p in doc.programs]
    updates = sorted((u.kb, u.installed_on) for u in doc.unique_updates())
    return programs, updates


@pytest.mark.parametrize("chunk", [None, 600])
def test_stored_rows_are_the_document_in_its_order(home: Any, db_url: str, chunk: int | None,
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

    # Several endpoints in one batch (the MariaDB group commit), the second one named twice:
    # its last document wins; an empty inventory leaves no rows.
    empty = Inventory.model_validate(dict(_document("WS-B"), programs=[], updates=[]))
    reverse = _document("WS-A")["programs"][::-1]
    swapped = Inventory.model_validate(dict(_document("WS-A"), programs=reverse))
    with session_scope(db_url) as session:
        store_many(session, [(swapped, ids[0], None, None), (docs[1], ids[1], None, None),
                             (empty, ids[1], None, None)])
    with session_scope(db_url) as session:
        assert _stored(session, ids[0]) == _expected(swapped)
        assert _stored(session, ids[1]) == ([], [])


def test_body_digest_is_the_agents() -> None:
    doc = _document("WS-A")
    doc["programs"][1]["name"] = "Café 日本語 \U0001F600 \u2028"
    for body in (json.dumps(doc).encode(), json.dumps(doc, ensure_ascii=False, indent=2).encode()):
        assert body_digest(body) == inventory_digest(json.loads(body))
    assert body_digest(b"[1, 2]") is None and body_digest(b"{") is None
