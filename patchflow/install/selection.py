"""The Patch Install view: missing patches grouped by patch, one patch with the endpoints it is
missing on, and the admin's selection of (patch, endpoint) pairs.

Selections persist until `install start` turns them into a job or `install refresh` clears
them. Only pairs the last scan found missing can be selected: installing a Windows 11 update on
a server, or a package on a machine that does not have the program, is refused up front.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models import Endpoint, Group, InstallSelection, MissingPatch, Patch, PatchDecline
from models.base import utcnow
from patchflow.catalog.catalog_query import find_patch, patch_detail
from patchflow.catalog.vuln_query import load_rated_missing, patch_rollup
from patchflow.errors import NotFoundError, UserError
from patchflow.fleet.endpoints import get_endpoint
from patchflow.install.eula import eula_info, patch_label, unaccepted
from patchflow.scanning.missing_query import MissingFilters
from reports.frames import severity_rank

LIST_COLUMNS = ["patch_id", "patch", "kb", "package_id", "title", "severity", "category",
                "restart_required", "eula_status", "release_date", "endpoints", "selected",
                "cves", "cvss", "exploited", "kev_due_date", "risk"]


def resolve_patch(session: Session, ref: str) -> Patch:
    """A patch by id, KB or PACKAGE@VERSION, or by bare PACKAGE when exactly one version of it
    is missing somewhere (the scan reports only the newest, so that is the usual case)."""
    ref = (ref or "").strip()
    try:
        return find_patch(session, ref)
    except NotFoundError:
        versions = list(session.scalars(
            select(Patch).where(Patch.package_id == ref).order_by(Patch.id)))
        if not versions:
            raise
        missing = [p for p in versions if session.scalar(
            select(MissingPatch.patch_id).where(MissingPatch.patch_id == p.id).limit(1))]
        if len(missing) == 1:
            return missing[0]
        known = ", ".join(p.ukey for p in versions)
        raise NotFoundError(f"{ref} has several versions ({known}): name one as PACKAGE@VERSION"
                            ) from None


def install_list(session: Session, filters: MissingFilters | None = None) -> list[dict[str, Any]]:
    """One row per missing patch: its attributes, how many endpoints miss it (within the
    filters) and how many of those are selected. Built on load_missing, so the counts agree
    with `patchflow missing` and the reports to the row. Severity and the vulnerability
    columns are the rated pairs' (patchflow.catalog.vuln_query.patch_rollup), so the Severity and
    Exploited filters select what `patchflow missing` selects."""
    frame = load_rated_missing(session, filters or MissingFilters())
    if frame.empty:
        return []
    pairs = set(session.execute(select(InstallSelection.patch_id, InstallSelection.endpoint_id))
                .tuples().all())
    frame = frame.assign(selected=[(int(p), int(e)) in pairs for p, e in
                                   zip(frame["patch_id"], frame["endpoint_id"], strict=True)])
    per_patch = frame.groupby("patch_id", sort=False).agg(
        endpoints=("endpoint_id", "nunique"), selected=("selected", "sum"))
    rated = patch_rollup(frame).set_index("patch_id")
    first = frame.drop_duplicates("patch_id").set_index("patch_id").drop(
        columns=["selected", "rating", *rated.columns])
    rows = first.join(per_patch).join(rated).reset_index()
    ukeys = dict(session.execute(select(Patch.id, Patch.ukey).where(
        Patch.id.in_([int(p) for p in rows["patch_id"]]))).tuples().all())
    rows["patch"] = [kb if isinstance(kb, str) and kb else ukeys.get(int(pid))
                     for kb, pid in zip(rows["kb"], rows["patch_id"], strict=True)]
    rows = rows.assign(_s=severity_rank(rows["severity"])).sort_values(
        ["_s", "release_date", "patch_id"], ascending=[True, False, True], na_position="last")
    out: list[dict[str, Any]] = json.loads(
        rows.reindex(columns=LIST_COLUMNS).to_json(orient="records", date_format="iso"))
    return out


def affected(session: Session, patch_id: int) -> list[dict[str, Any]]:
    """The endpoints the last scans found missing this patch, with their selection state."""
    selected = set(session.scalars(
        select(InstallSelection.endpoint_id).where(InstallSelection.patch_id == patch_id)))
    rows = session.execute(
        select(Endpoint.id, Endpoint.hostname, Group.name, Endpoint.roaming, Endpoint.revoked,
               MissingPatch.installed_version, MissingPatch.available_version,
               MissingPatch.reason, MissingPatch.detected_at)
        .join(Endpoint, Endpoint.id == MissingPatch.endpoint_id)
        .outerjoin(Group, Group.id == Endpoint.group_id)
        .where(MissingPatch.patch_id == patch_id)
        .order_by(Endpoint.hostname)).all()
    return [{"endpoint": r.hostname, "group": r.name, "roaming": r.roaming,
             "revoked": r.revoked, "installed_version": r.installed_version,
             "available_version": r.available_version, "reason": r.reason,
             "detected_at": r.detected_at.isoformat() if r.detected_at else None,
             "selected": r.id in selected} for r in rows]


def install_show(session: Session, ref: str) -> dict[str, Any]:
    patch = resolve_patch(session, ref)
    detail = patch_detail(session, patch)
    eula = eula_info(session, patch)
    endpoints = affected(session, patch.id)
    return {**detail, "patch": patch_label(patch), "eula_status": eula["eula_status"],
            "eula_accepted_by": eula["accepted_by"], "eula_accepted_at": eula["accepted_at"],
            "endpoints_affected": len(endpoints),
            "endpoints_selected": sum(1 for e in endpoints if e["selected"]),
            "endpoints": endpoints}


def _missing_on(session: Session, patch_id: int) -> dict[int, str]:
    """endpoint id → host name for every active endpoint that misses the patch."""
    return dict(session.execute(
        select(Endpoint.id, Endpoint.hostname)
        .join(MissingPatch, MissingPatch.endpoint_id == Endpoint.id)
        .where(MissingPatch.patch_id == patch_id, Endpoint.revoked.is_(False))).tuples().all())


def refuse_declined(session: Session, patch_ids: Iterable[int]) -> None:
    """A declined patch is not offered, whichever screen or command asked for it: the
    refusal names it and the command that offers it again."""
    wanted = sorted(set(patch_ids))
    declined = [patch for start in range(0, len(wanted), 500) for patch in session.scalars(
        select(Patch).join(PatchDecline, PatchDecline.patch_id == Patch.id)
        .where(Patch.id.in_(wanted[start:start + 500])).order_by(Patch.id))]
    if not declined:
        return
    first = declined[0]
    more = f" (and {len(declined) - 1} more)" if len(declined) > 1 else ""
    raise UserError(f"{patch_label(first)} is declined{more}: it is not offered "
                    f"(`patchflow undecline {patch_label(first)}` to offer it again)")


def pairs_for(session: Session, ref: str, endpoints: list[str] | None,
              all_affected: bool) -> tuple[Patch, list[int]]:
    """The patch and the endpoint ids a select/install request names, checked: each endpoint
    must exist, not be revoked, and miss the patch according to its last scan."""
    if bool(endpoints) == bool(all_affected):
        raise UserError("give --endpoints H1,H2 or --all-affected (one of them)")
    patch = resolve_patch(session, ref)
    refuse_declined(session, [patch.id])
    missing = _missing_on(session, patch.id)
    if all_affected:
        if not missing:
            raise UserError(f"{patch_label(patch)} is not missing on any active endpoint "
                            "(per the last scans): nothing to select")
        return patch, sorted(missing)
    ids: list[int] = []
    for host in dict.fromkeys(h.strip() for h in endpoints or [] if h.strip()):
        endpoint = get_endpoint(session, host)
        if endpoint.revoked:
            raise UserError(f"endpoint {endpoint.hostname} is revoked: re-enroll its agent first")
        if endpoint.id not in missing:
            raise UserError(f"{patch_label(patch)} is not missing on {endpoint.hostname} (per its "
                            "last scan): nothing selected")
        ids.append(endpoint.id)
    if not ids:
        raise UserError("--endpoints names no endpoint")
    return patch, ids


def select_pairs(session: Session, ref: str, endpoints: list[str] | None = None,
                 all_affected: bool = False, who: str | None = None) -> dict[str, Any]:
    patch, ids = pairs_for(session, ref, endpoints, all_affected)
    have = set(session.scalars(select(InstallSelection.endpoint_id)
                               .where(InstallSelection.patch_id == patch.id)))
    new = [e for e in ids if e not in have]
    now = utcnow()
    session.add_all(InstallSelection(patch_id=patch.id, endpoint_id=e, selected_by=who,
                                     selected_at=now) for e in new)
    session.flush()
    note = None
    if unaccepted(session, [patch.id]):
        note = (f"{patch_label(patch)} needs its EULA accepted before it can be installed "
                f"(`patchflow eula accept {patch_label(patch)}`)")
    return {"patch": patch_label(patch), "patch_id": patch.id, "added": len(new),
            "selected": len(have) + len(new), "note": note}


def unselect_pairs(session: Session, ref: str, endpoints: list[str] | None = None
                   ) -> dict[str, Any]:
    """Without endpoints: the whole patch leaves the selection."""
    patch = resolve_patch(session, ref)
    stmt = delete(InstallSelection).where(InstallSelection.patch_id == patch.id)
    if endpoints:
        ids = [get_endpoint(session, h).id for h in endpoints if h.strip()]
        stmt = stmt.where(InstallSelection.endpoint_id.in_(ids))
    removed = session.execute(stmt).rowcount  # type: ignore[attr-defined]
    left = session.scalar(select(func.count()).select_from(InstallSelection)
                          .where(InstallSelection.patch_id == patch.id)) or 0
    return {"patch": patch_label(patch), "patch_id": patch.id, "removed": int(removed or 0),
            "selected": int(left)}


def refresh_selection(session: Session) -> int:
    """Clear the whole selection; returns how many pairs were dropped."""
    return int(session.execute(delete(InstallSelection)).rowcount or 0)  # type: ignore[attr-defined]


def selection_rows(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(
        select(InstallSelection.patch_id, Patch.kb, Patch.ukey, Patch.title, Endpoint.hostname,
               InstallSelection.selected_by, InstallSelection.selected_at)
        .join(Patch, Patch.id == InstallSelection.patch_id)
        .join(Endpoint, Endpoint.id == InstallSelection.endpoint_id)
        .order_by(Patch.id, Endpoint.hostname)).all()
    return [{"patch_id": r.patch_id, "patch": r.kb or r.ukey, "title": r.title,
             "endpoint": r.hostname, "selected_by": r.selected_by,
             "selected_at": r.selected_at.isoformat() if r.selected_at else None} for r in rows]
