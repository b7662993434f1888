"""Manual approvals and declines: who approved which patch for which groups, and which patches
nobody is to be offered.

An approval is per group (and covers the group's subgroups when a cycle resolves endpoints); a
decline is global. Both record who and when, and both go to the audit log in the act's own
transaction. Declining a patch also drops it from the install selection, so a declined patch
cannot slip into the next `install start`. The one SQL condition every view, count and job
filters on is `patchflow.scanning.missing_query.not_declined()`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models import Group, InstallSelection, Patch, PatchApproval, PatchDecline
from models.base import utcnow
from patchflow.catalog.catalog_query import find_patch
from patchflow.errors import UserError
from patchflow.fleet.groups import group_by_name, groups_by_names
from patchflow.ops import audit
from patchflow.scanning.missing_query import parse_date


def label(patch: Patch) -> str:
    return patch.kb or patch.ukey


def approve(session: Session, ref: str, groups: list[str] | None, who: str,
            deadline: str | dt.date | None = None, source: str = "cli") -> dict[str, Any]:
    """Approve a patch for groups (an existing approval gets the new deadline and author)."""
    patch = find_patch(session, (ref or "").strip())
    if session.get(PatchDecline, patch.id) is not None:
        raise UserError(f"{label(patch)} is declined: `patchflow undecline {label(patch)}` "
                        "first")
    when = parse_date(deadline, "--deadline")
    if when is not None and when < utcnow().date():
        raise UserError(f"--deadline {when} is in the past")
    now = utcnow()
    done: list[str] = []
    for group in groups_by_names(session, groups):
        row = session.scalar(select(PatchApproval).filter_by(patch_id=patch.id,
                                                             group_id=group.id))
        reason = f"approved by {who} on {now.date().isoformat()}"
        if row is None:
            session.add(PatchApproval(patch_id=patch.id, group_id=group.id, deadline=when,
                                      approved_by=who[:128], approved_at=now, reason=reason))
        else:
            row.deadline, row.approved_by, row.approved_at, row.reason = (
                when, who[:128], now, reason)
        done.append(group.name)
    session.flush()
    audit.record(session, who, "patch.approve", label(patch),
                 f"groups {', '.join(done)}" + (f"; deadline {when}" if when else ""),
                 source=source)
    return {"patch": label(patch), "patch_id": patch.id, "groups": done,
            "deadline": when.isoformat() if when else None}


def unapprove(session: Session, ref: str, groups: list[str] | None, who: str,
              source: str = "cli") -> dict[str, Any]:
    patch = find_patch(session, (ref or "").strip())
    chosen = groups_by_names(session, groups)
    removed = session.execute(delete(PatchApproval).where(
        PatchApproval.patch_id == patch.id,
        PatchApproval.group_id.in_([g.id for g in chosen]))).rowcount  # type: ignore[attr-defined]
    audit.record(session, who, "patch.unapprove", label(patch),
                 f"groups {', '.join(g.name for g in chosen)}", source=source)
    return {"patch": label(patch), "patch_id": patch.id, "removed": int(removed or 0)}


def _decline(session: Session, patch: Patch, who: str, reason: str | None) -> bool:
    if session.get(PatchDecline, patch.id) is not None:
        return False
    session.add(PatchDecline(patch_id=patch.id, declined_by=who[:128], declined_at=utcnow(),
                             reason=(reason or "").strip()[:2000] or None))
    session.execute(delete(InstallSelection).where(InstallSelection.patch_id == patch.id))
    return True


def decline(session: Session, ref: str, who: str, reason: str | None = None,
            source: str = "cli") -> dict[str, Any]:
    patch = find_patch(session, (ref or "").strip())
    added = _decline(session, patch, who, reason)
    session.flush()
    if added:
        audit.record(session, who, "patch.decline", label(patch), reason, source=source)
    return {"patch": label(patch), "patch_id": patch.id, "declined": True,
            "already": not added}


def decline_superseded(session: Session, who: str, source: str = "cli") -> dict[str, Any]:
    """Decline every patch the catalog marks superseded (a newer patch replaces it)."""
    newer = {p.id: label(p) for p in session.scalars(
        select(Patch).where(Patch.id.in_(select(Patch.superseded_by_id))))}
    declined: list[str] = []
    for patch in session.scalars(select(Patch).where(Patch.superseded_by_id.is_not(None))
                                 .order_by(Patch.id)):
        by = newer.get(patch.superseded_by_id or 0, "a newer patch")
        if _decline(session, patch, who, f"superseded by {by}"):
            declined.append(label(patch))
    session.flush()
    if declined:
        audit.record(session, who, "patch.decline", f"{len(declined)} superseded patches",
                     ", ".join(declined), source=source)
    return {"declined": declined, "count": len(declined)}


def undecline(session: Session, ref: str, who: str, source: str = "cli") -> dict[str, Any]:
    patch = find_patch(session, (ref or "").strip())
    removed = session.execute(delete(PatchDecline).where(
        PatchDecline.patch_id == patch.id)).rowcount  # type: ignore[attr-defined]
    if not removed:
        raise UserError(f"{label(patch)} is not declined")
    audit.record(session, who, "patch.undecline", label(patch), source=source)
    return {"patch": label(patch), "patch_id": patch.id, "declined": False}


def list_approvals(session: Session, group: str | None = None) -> list[dict[str, Any]]:
    """Manual approvals (newest first), then declines, each row saying who, when and why."""
    query = (select(PatchApproval, Patch, Group.name)
             .join(Patch, Patch.id == PatchApproval.patch_id)
             .join(Group, Group.id == PatchApproval.group_id)
             .order_by(PatchApproval.approved_at.desc(), PatchApproval.id.desc()))
    if group:
        query = query.where(PatchApproval.group_id == group_by_name(session, group).id)
    rows: list[dict[str, Any]] = [{
        "kind": "approved", "patch": label(p), "patch_id": p.id, "kb": p.kb,
        "package_id": p.package_id, "title": p.title, "group": gname,
        "deadline": a.deadline.isoformat() if a.deadline else None, "by": a.approved_by,
        "at": a.approved_at.isoformat(), "why": a.reason,
    } for a, p, gname in session.execute(query).tuples()]
    if group is None:
        rows.extend({
            "kind": "declined", "patch": label(p), "patch_id": p.id, "kb": p.kb,
            "package_id": p.package_id, "title": p.title, "group": None, "deadline": None,
            "by": d.declined_by, "at": d.declined_at.isoformat(),
            "why": f"declined by {d.declined_by}" + (f": {d.reason}" if d.reason else ""),
        } for d, p in session.execute(
            select(PatchDecline, Patch).join(Patch, Patch.id == PatchDecline.patch_id)
            .order_by(PatchDecline.declined_at.desc())).tuples())
    return rows
