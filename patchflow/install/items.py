"""Changing item states in the database, each change with its event (the audit trail).

Every change is a conditional UPDATE ("… WHERE state IN (what may precede)"): the agent API,
the flow's timeout sweep and `jobs cancel` can race for one item from different processes, and
the database lets exactly one of them win without locks held across requests. The winner, and
only the winner, writes the event, so the trail never shows a change that did not happen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.orm import Session

from models import InstallItemEvent, InstallJobItem
from models.base import utcnow
from models.bulk import chunks

ITEMS = cast(Table, InstallJobItem.__table__)
EVENTS = cast(Table, InstallItemEvent.__table__)


def add_events(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert events (item_id, state, at, exit_code, message) in one executemany."""
    if rows:
        full = [{"exit_code": None, "message": None, **row} for row in rows]
        session.execute(insert(EVENTS), full)


def event(item_id: int, state: str, at: dt.datetime, message: str | None = None,
          exit_code: int | None = None) -> dict[str, Any]:
    return {"item_id": item_id, "state": state, "at": at, "exit_code": exit_code,
            "message": message[:4000] if message else message}


def transition(
    session: Session,
    item_id: int,
    to_state: str,
    allowed_from: Sequence[str],
    *,
    message: str | None = None,
    exit_code: int | None = None,
    values: dict[str, Any] | None = None,
    event_message: str | None = None,
    where: Sequence[Any] = (),
    now: dt.datetime | None = None,
    trail: Sequence[tuple[str, str | None, int | None]] | None = None,
) -> bool:
    """Move one item to `to_state` if it is in one of `allowed_from`; True when it moved.

    `message`/`exit_code` go on the item (None clears a previous exit code); `event_message`
    (default `message`) goes on the event. `trail` replaces that one event with several
    (state, message, exit code), e.g. "failed" then "pending" for a failure queued for retry.
    """
    now = now or utcnow()
    stmt = (
        update(ITEMS)
        .where(ITEMS.c.id == item_id, ITEMS.c.state.in_(list(allowed_from)), *where)
        .values(state=to_state, updated_at=now, message=message, exit_code=exit_code,
                **(values or {}))
    )
    moved = session.execute(stmt).rowcount == 1  # type: ignore[attr-defined]
    if moved:
        steps = trail or [(to_state, event_message or message, exit_code)]
        add_events(session, [event(item_id, state, now, text, code)
                             for state, text, code in steps])
    return moved


def move_many(
    session: Session,
    item_ids: Sequence[int],
    to_state: str,
    allowed_from: Sequence[str],
    *,
    message: str | None = None,
    values: dict[str, Any] | None = None,
    now: dt.datetime | None = None,
) -> list[int]:
    """Move many items at once (dispatch, cancel, content failures); returns those moved.

    The ids that can move are read first, locked (MariaDB: SELECT … FOR UPDATE; SQLite
    serialises writers anyway), so exactly the rows read are updated and given an event.
    """
    now = now or utcnow()
    moved: list[int] = []
    for chunk in chunks(list(item_ids)):
        candidates = list(session.scalars(
            select(ITEMS.c.id).where(ITEMS.c.id.in_(chunk),
                                     ITEMS.c.state.in_(list(allowed_from)))
            .with_for_update()))
        if not candidates:
            continue
        session.execute(
            update(ITEMS)
            .where(ITEMS.c.id.in_(candidates), ITEMS.c.state.in_(list(allowed_from)))
            .values(state=to_state, updated_at=now, message=message, **(values or {}))
        )
        add_events(session, [event(i, to_state, now, message) for i in candidates])
        moved.extend(candidates)
    return moved
