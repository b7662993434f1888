"""Verification after a cycle's install: did the patches an agent reported installed really go?

An agent's "succeeded" is the installer's exit code; the truth is the next inventory. The
cycle waits (bounded) for a fresh inventory from each endpoint with a succeeded item, rescans
those endpoints, and flags every succeeded item whose patch the rescan still finds missing as
"Installed, still missing", with the scan's reason, on the item's trail and in the cycle run.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Endpoint, InstallJobItem, MissingPatch, Patch
from models.base import utcnow
from patchflow.install import states as st
from patchflow.install.items import add_events, event

STILL_MISSING = "Installed, still missing"
APPLIED = (st.SUCCEEDED, st.REBOOT_PENDING)


def touched(session: Session, job_id: int) -> dict[int, dt.datetime | None]:
    """endpoint id → when its last applied item finished, for endpoints with applied items."""
    return {int(e): at for e, at in session.execute(
        select(InstallJobItem.endpoint_id, func.max(InstallJobItem.finished_at))
        .where(InstallJobItem.job_id == job_id, InstallJobItem.state.in_(APPLIED))
        .group_by(InstallJobItem.endpoint_id)).tuples()}


def inventory_status(session: Session, job_id: int) -> tuple[list[str], list[str]]:
    """Host names of the touched endpoints, and of those whose inventory is still older than
    their last install (the verification waits for them)."""
    finished = touched(session, job_id)
    rows = session.execute(select(Endpoint.id, Endpoint.hostname, Endpoint.inventory_at)
                           .where(Endpoint.id.in_(list(finished) or [-1]))).all()
    stale = [r.hostname for r in rows
             if finished[r.id] is not None and (r.inventory_at is None
                                                or r.inventory_at < finished[r.id])]
    return sorted(r.hostname for r in rows), sorted(stale)


def flag_still_missing(session: Session, job_id: int, stale: list[str]) -> list[dict[str, Any]]:
    """Applied items whose pair the rescan still lists, each flagged on its trail once."""
    rows = session.execute(
        select(InstallJobItem.id, InstallJobItem.state, Endpoint.hostname, Patch.kb,
               Patch.ukey, MissingPatch.reason)
        .join(MissingPatch, (MissingPatch.endpoint_id == InstallJobItem.endpoint_id)
              & (MissingPatch.patch_id == InstallJobItem.patch_id))
        .join(Endpoint, Endpoint.id == InstallJobItem.endpoint_id)
        .join(Patch, Patch.id == InstallJobItem.patch_id)
        .where(InstallJobItem.job_id == job_id, InstallJobItem.state.in_(APPLIED))
        .order_by(Endpoint.hostname, Patch.id)).all()
    now = utcnow()
    out: list[dict[str, Any]] = []
    events = []
    for r in rows:
        note = f"{STILL_MISSING}: {r.reason or 'the rescan still finds it missing'}"
        if r.hostname in stale:
            note += " (no inventory received since the install)"
        out.append({"item": r.id, "endpoint": r.hostname, "patch": r.kb or r.ukey,
                    "state": STILL_MISSING, "reason": r.reason, "message": note})
        events.append(event(r.id, r.state, now, note))
    add_events(session, events)
    return out
