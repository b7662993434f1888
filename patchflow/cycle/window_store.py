"""A policy's maintenance windows in the database, and the gate install dispatch asks.

`window add|list|delete` manage the rows (audited). `gate` is what
patchflow/install/dispatch.py calls at the one place items are handed to agents: which of the
items it is about to dispatch may go now (and until when their endpoint may restart), and which
wait, with the note that says until when. Windows are read on every call, so a window added,
deleted or opening applies to the next dispatch of a running job without restarting its flow.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models import Endpoint, MaintenanceWindow
from models.bulk import chunks
from patchflow.cycle import windows as w
from patchflow.errors import NotFoundError, UserError
from patchflow.fleet.tree import Tree
from patchflow.install.items import ITEMS
from patchflow.ops import audit

MAX_WINDOWS_PER_POLICY = 50


def _policy(session: Session, name: str) -> Any:
    from patchflow.cycle.plan import get_policy  # plan imports the install package

    return get_policy(session, name)


def to_window(row: MaintenanceWindow) -> w.Window:
    return w.Window(w.parse_days(row.days), w.parse_time(row.start_time, "start"),
                    w.parse_time(row.end_time, "end"), row.time_zone)


def _row_dict(row: MaintenanceWindow, policy: str, now: dt.datetime) -> dict[str, Any]:
    window = to_window(row)
    upcoming = w.next_open([window], now)
    closes = w.open_until([window], now)
    return {"id": row.id, "policy": policy, "days": row.days, "from": row.start_time,
            "to": row.end_time, "tz": row.time_zone,
            "crosses_midnight": window.crosses_midnight, "open_now": closes is not None,
            "closes_at": closes.isoformat() if closes else None,
            "next_open": upcoming[0].isoformat() if upcoming else None,
            "created_by": row.created_by,
            "created_at": row.created_at.isoformat() if row.created_at else None}


def add_window(session: Session, policy: str, days: str | None, start: str | None,
               end: str | None, tz: str | None, who: str,
               now: dt.datetime | None = None, source: str = "cli") -> dict[str, Any]:
    """Validate and store one window for `policy`; returns it as `window list` shows it."""
    pol = _policy(session, policy)
    window = w.make_window(days, start, end, tz)
    count = session.scalar(select(func.count()).select_from(MaintenanceWindow)
                           .where(MaintenanceWindow.policy_id == pol.id)) or 0
    if count >= MAX_WINDOWS_PER_POLICY:
        raise UserError(f"policy {pol.name} already has {count} maintenance windows "
                        f"(at most {MAX_WINDOWS_PER_POLICY})")
    row = MaintenanceWindow(policy_id=pol.id, days=w.format_days(window.days),
                            start_time=f"{window.start:%H:%M}", end_time=f"{window.end:%H:%M}",
                            time_zone=window.tz, created_by=(who or "unknown")[:128])
    session.add(row)
    session.flush()
    audit.record(session, who, "window.add", f"{pol.name}/{row.id}", window.label(),
                 source=source)
    return _row_dict(row, pol.name, now or dt.datetime.now(dt.UTC))


def list_windows(session: Session, policy: str, now: dt.datetime | None = None
                 ) -> list[dict[str, Any]]:
    pol = _policy(session, policy)
    rows = session.scalars(select(MaintenanceWindow)
                           .where(MaintenanceWindow.policy_id == pol.id)
                           .order_by(MaintenanceWindow.id))
    return [_row_dict(r, pol.name, now or dt.datetime.now(dt.UTC)) for r in rows]


def delete_window(session: Session, policy: str, window_id: int, who: str,
                  source: str = "cli") -> None:
    pol = _policy(session, policy)
    removed = session.execute(delete(MaintenanceWindow).where(
        MaintenanceWindow.policy_id == pol.id,
        MaintenanceWindow.id == window_id)).rowcount  # type: ignore[attr-defined]
    if not removed:
        raise NotFoundError(f"policy {pol.name} has no maintenance window {window_id} "
                            f"(`patchflow policies window list {pol.name}`)")
    audit.record(session, who, "window.delete", f"{pol.name}/{window_id}", source=source)


def windows_by_policy(session: Session) -> dict[int, list[w.Window]]:
    found: dict[int, list[w.Window]] = {}
    for row in session.scalars(select(MaintenanceWindow).order_by(MaintenanceWindow.id)):
        found.setdefault(row.policy_id, []).append(to_window(row))
    return found


# --- the dispatch gate ----------------------------------------------------------------------------


@dataclass
class Gate:
    """`allowed`: item id → when its endpoint's window closes (None: the policy has no
    windows). `waiting`: item id → the note it carries while it waits."""

    allowed: dict[int, dt.datetime | None] = field(default_factory=dict)
    waiting: dict[int, str] = field(default_factory=dict)


def gate(session: Session, item_ids: Sequence[int], now: dt.datetime) -> Gate:
    """Split items about to be dispatched by their endpoint's policy windows at `now`.

    A handful of statements whatever the item count; with no window anywhere (the usual case)
    one SELECT of the (small) windows table and everything passes."""
    out = Gate()
    by_policy = windows_by_policy(session) if item_ids else {}
    if not by_policy:
        out.allowed = dict.fromkeys(item_ids)
        return out
    tree = Tree.load(session)
    endpoint_of: dict[int, int] = {}
    for chunk in chunks(list(item_ids)):
        endpoint_of.update(session.execute(select(ITEMS.c.id, ITEMS.c.endpoint_id)
                                           .where(ITEMS.c.id.in_(chunk))).tuples().all())
    group_of: dict[int, int | None] = {}
    for chunk in chunks(sorted(set(endpoint_of.values()))):
        group_of.update(session.execute(select(Endpoint.id, Endpoint.group_id)
                                        .where(Endpoint.id.in_(chunk))).tuples().all())
    verdicts: dict[int | None, tuple[bool, dt.datetime | None, str]] = {}
    for item_id in item_ids:
        if item_id not in endpoint_of:
            continue  # gone meanwhile: nothing to dispatch
        policy_id = tree.effective_policy(group_of.get(endpoint_of[item_id]))
        if policy_id not in verdicts:
            windows = by_policy.get(policy_id or -1, [])
            closes = w.open_until(windows, now) if windows else None
            verdicts[policy_id] = (not windows or closes is not None, closes,
                                   "" if not windows or closes else w.waiting_note(windows, now))
        ok, closes, note = verdicts[policy_id]
        if ok:
            out.allowed[item_id] = closes
        else:
            out.waiting[item_id] = note
    return out
