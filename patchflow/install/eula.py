"""EULAs: which patches need one, who accepted it and when, and the refusal to install without.

A patch whose vendor requires accepting a licence (Oracle Java, for one) is never installed
until an administrator has accepted it; the acceptance is recorded once, with the name and the
time, and applies to every later install of that patch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import EulaAcceptance, Patch
from models.base import utcnow
from models.enums import EulaStatus
from patchflow.catalog.catalog_query import find_patch
from patchflow.errors import UserError


def patch_label(patch: Patch) -> str:
    """How people and the CLI name a patch: its KB, else PACKAGE@VERSION."""
    return patch.kb or patch.ukey


def eula_info(session: Session, patch: Patch) -> dict[str, Any]:
    acceptance = session.get(EulaAcceptance, patch.id)
    accepted = (not patch.eula_required) or acceptance is not None
    return {
        "patch_id": patch.id,
        "patch": patch_label(patch),
        "title": patch.title,
        "vendor": patch.vendor,
        "eula_required": patch.eula_required,
        "eula_url": patch.eula_url,
        "eula_status": (EulaStatus.ACCEPTED if accepted else EulaStatus.NOT_ACCEPTED).value,
        "accepted_by": acceptance.accepted_by if acceptance else None,
        "accepted_at": acceptance.accepted_at.isoformat() if acceptance else None,
    }


def show_eula(session: Session, ref: str) -> dict[str, Any]:
    return eula_info(session, find_patch(session, ref))


def accept_eula(session: Session, ref: str, who: str) -> dict[str, Any]:
    """Record the acceptance (first one wins: re-accepting keeps the original who and when)."""
    patch = find_patch(session, ref)
    who = (who or "").strip()[:128]
    if not who:
        raise UserError("who accepts the EULA must be known (no user name)")
    note = None
    if not patch.eula_required:
        note = f"{patch_label(patch)} has no EULA: nothing to accept"
    elif session.get(EulaAcceptance, patch.id) is None:
        session.add(EulaAcceptance(patch_id=patch.id, accepted_by=who, accepted_at=utcnow()))
        session.flush()
    else:
        note = f"the EULA of {patch_label(patch)} was already accepted"
    return {**eula_info(session, patch), "note": note}


def unaccepted(session: Session, patch_ids: Iterable[int]) -> list[Patch]:
    """Patches among `patch_ids` that need a EULA nobody has accepted."""
    ids = sorted(set(patch_ids))
    if not ids:
        return []
    return list(session.scalars(
        select(Patch)
        .outerjoin(EulaAcceptance, EulaAcceptance.patch_id == Patch.id)
        .where(Patch.id.in_(ids), Patch.eula_required.is_(True),
               EulaAcceptance.patch_id.is_(None))
        .order_by(Patch.id)))


def refuse_unaccepted(session: Session, patch_ids: Iterable[int]) -> None:
    """The clear refusal: which patch, why, and the two commands that fix it."""
    blocked = unaccepted(session, patch_ids)
    if not blocked:
        return
    first = blocked[0]
    more = f" (and {len(blocked) - 1} more: {', '.join(patch_label(p) for p in blocked[1:])})" \
        if len(blocked) > 1 else ""
    raise UserError(
        f"cannot install {patch_label(first)} ({first.title}): its EULA is not accepted{more}; "
        f"read it with `patchflow eula show {patch_label(first)}`, accept it with "
        f"`patchflow eula accept {patch_label(first)}`, or unselect the patch"
    )
