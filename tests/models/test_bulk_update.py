"""`models.bulk.update_rows` on SQLite and MariaDB: each row gets its own values, every row
the shared ones, across more rows than one statement carries, and listeners learn per row
what was assigned."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import ORMExecuteState, Session

from models import Endpoint
from models.bulk import ASSIGNED_ROWS, IN_LIST, update_rows
from models.db import session_scope

ENDPOINTS = cast(sa.Table, Endpoint.__table__)


def _endpoints(url: str, count: int) -> list[int]:
    with session_scope(url) as session:
        rows = [Endpoint(hostname=f"WS-{i:04d}", revoked=False, hotpatch=False,
                         secret_hash="x", inventory_rev=i % 3) for i in range(count)]
        session.add_all(rows)
        session.commit()
        return sorted(e.id for e in rows)


def test_each_row_gets_its_own_values_and_the_shared_ones(db_url: str) -> None:
    ids = _endpoints(db_url, IN_LIST * 2 + 7)  # three statements' worth
    untouched = ids[-1]
    when = dt.datetime(2026, 12, 6, 10, 30, tzinfo=dt.UTC)
    values = {e: {"scan_message": f"note for {e}: 'quoted' \"text\"", "os_build": 20_000 + e}
              for e in ids[:-1]}
    # A second set of columns in the same call goes in statements of its own.
    values[ids[0]] = {"scan_message": None}
    seen: list[dict[str, Any]] = []

    def listen(state: ORMExecuteState) -> None:
        seen.extend(state.execution_options.get(ASSIGNED_ROWS, []))

    sa.event.listen(Session, "do_orm_execute", listen)
    try:
        with session_scope(db_url) as session:
            before = dict(session.execute(sa.select(Endpoint.id, Endpoint.inventory_rev)).all())
            update_rows(session, ENDPOINTS, values, same={
                "scan_state_at": when, "inventory_rev": ENDPOINTS.c.inventory_rev + 1})
            session.commit()
    finally:
        sa.event.remove(Session, "do_orm_execute", listen)
    with session_scope(db_url) as session:
        rows = {r.id: r for r in session.execute(sa.select(
            Endpoint.id, Endpoint.scan_message, Endpoint.os_build, Endpoint.scan_state_at,
            Endpoint.inventory_rev))}
    for e in ids[1:-1]:
        assert (rows[e].scan_message, rows[e].os_build) == (values[e]["scan_message"], 20_000 + e)
    assert rows[ids[0]].scan_message is None and rows[ids[0]].os_build is None
    assert all(rows[e].scan_state_at == when for e in ids[:-1])
    assert all(rows[e].inventory_rev == before[e] + 1 for e in ids[:-1])
    # The row not named keeps everything, the expression included.
    assert rows[untouched].scan_state_at is None
    assert rows[untouched].inventory_rev == before[untouched]
    # Listeners see each row's own values and the shared plain ones (not the expression).
    assert len(seen) == len(values)
    assert {"scan_message": values[ids[5]]["scan_message"], "os_build": 20_000 + ids[5],
            "scan_state_at": when} in seen


def test_nothing_to_update_runs_no_statement(db_url: str) -> None:
    statements: list[str] = []

    def listen(state: ORMExecuteState) -> None:
        statements.append(str(state.statement))

    sa.event.listen(Session, "do_orm_execute", listen)
    try:
        with session_scope(db_url) as session:
            update_rows(session, ENDPOINTS, {}, same={"scan_message": "x"})
    finally:
        sa.event.remove(Session, "do_orm_execute", listen)
    assert statements == []
