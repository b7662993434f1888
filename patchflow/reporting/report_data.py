"""Database reads behind the reports other than the missing-patch rows, and the dashboard counts.

Each loader returns one whole DataFrame for the filters (no per-row queries), using the same
`apply_scope` as `load_missing`, so a filter selects the same endpoints and patches in every
report. The dashboard counts are SQL GROUP BYs returning a handful of rows: they stay well under
half a second on 400,000 missing pairs because no pair ever leaves the database.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pandas as pd
from sqlalchemy import exists, func, or_, select
from sqlalchemy.orm import Session

from models import (
    Endpoint,
    InstalledProgram,
    InstalledUpdate,
    InstallJob,
    InstallJobItem,
    MissingPatch,
    Patch,
    PatchInstaller,
    ReportRun,
)
from models.enums import ItemState, ScanState
from patchflow.catalog.vuln_query import dashboard_ratings
from patchflow.scanning.missing_query import (
    MissingFilters,
    apply_scope,
    attach_attrs,
    day_bounds,
    declined_ids,
    fetch_frame,
    load_endpoint_attrs,
    load_patch_attrs,
    not_declined,
    raw,
    to_utc,
)
from reports.dashboard import build_dashboard
from reports.frames import ENDPOINT_COLUMNS, INSTALLED_COLUMNS, OUTCOME_COLUMNS, empty
from reports.installed import SOURCE_JOB, SOURCE_SCAN


def load_installed(session: Session, filters: MissingFilters | None = None) -> pd.DataFrame:
    """Installed (endpoint, patch) pairs: succeeded job items, then what inventories report.

    A pair installed by a patchflow job appears once, as `patchflow`, even when the next
    inventory reports it too. Inventory matches: KBs by number, applications by MSI ProductCode
    (an exact identity; name matching is the scan's business). The date range applies to the
    install date (job item finish, or the install date the endpoint reported).
    """
    filters = (filters or MissingFilters()).resolve(session)
    start, end = day_bounds(filters)
    finished = func.coalesce(InstallJobItem.finished_at, InstallJobItem.updated_at)
    jobs = (
        select(
            InstallJobItem.id.label("item_id"),
            InstallJobItem.endpoint_id,
            InstallJobItem.patch_id,
            raw(InstallJobItem.finished_at).label("installed_at"),
            raw(InstallJobItem.updated_at),
            InstallJob.id.label("job_id"),
            InstallJob.created_by.label("started_by"),
        )
        .join(InstallJob, InstallJob.id == InstallJobItem.job_id)
        .where(InstallJobItem.state == ItemState.SUCCEEDED.value)
    )
    jobs = apply_scope(jobs, filters, InstallJobItem.endpoint_id, InstallJobItem.patch_id)
    if start:
        jobs = jobs.where(finished >= start)
    if end:
        jobs = jobs.where(finished < end)
    job_rows = fetch_frame(session, jobs)
    if not job_rows.empty:
        job_rows["installed_at"] = to_utc(job_rows["installed_at"]).fillna(
            to_utc(job_rows["updated_at"])
        )
        # A reinstall leaves several succeeded items: the latest one stands for the pair.
        job_rows = job_rows.sort_values("item_id").drop_duplicates(
            ["endpoint_id", "patch_id"], keep="last"
        )
        job_rows["source"] = SOURCE_JOB
        job_rows = job_rows.drop(columns=["item_id", "updated_at"])

    kbs = select(
        InstalledUpdate.endpoint_id,
        Patch.id.label("patch_id"),
        InstalledUpdate.installed_on.label("installed_on"),
    ).join(Patch, Patch.kb == InstalledUpdate.kb)
    kbs = apply_scope(kbs, filters, InstalledUpdate.endpoint_id, Patch.id, joined=(Patch,))
    programs = (
        select(
            InstalledProgram.endpoint_id,
            PatchInstaller.patch_id,
            InstalledProgram.install_date.label("installed_on"),
        )
        .join(PatchInstaller, PatchInstaller.product_code == InstalledProgram.product_code)
        .where(InstalledProgram.product_code.is_not(None), InstalledProgram.product_code != "")
    )
    programs = apply_scope(programs, filters, InstalledProgram.endpoint_id,
                           PatchInstaller.patch_id)
    scan_parts = []
    for stmt, column in ((kbs, InstalledUpdate.installed_on),
                         (programs, InstalledProgram.install_date)):
        if filters.since:
            stmt = stmt.where(column >= filters.since)
        if filters.until:
            stmt = stmt.where(column <= filters.until)
        scan_parts.append(fetch_frame(session, stmt.distinct()))
    scan_rows = pd.concat([p for p in scan_parts if not p.empty] or [scan_parts[0]])
    if not scan_rows.empty:
        scan_rows["installed_at"] = to_utc(scan_rows["installed_on"].map(
            lambda d: d if d is None or isinstance(d, str) else d.isoformat()))
        scan_rows = scan_rows.sort_values("installed_at", na_position="first").drop_duplicates(
            ["endpoint_id", "patch_id"], keep="last"
        )
        scan_rows = scan_rows.drop(columns="installed_on").assign(
            source=SOURCE_SCAN, job_id=pd.NA, started_by=None
        )
        if not job_rows.empty:
            done = pd.MultiIndex.from_frame(job_rows[["endpoint_id", "patch_id"]])
            keys = pd.MultiIndex.from_frame(scan_rows[["endpoint_id", "patch_id"]])
            scan_rows = scan_rows[~keys.isin(done)]
    parts = [p for p in (job_rows, scan_rows) if not p.empty]
    if not parts:
        return empty(INSTALLED_COLUMNS)
    rows = pd.concat(parts, ignore_index=True)
    rows["job_id"] = rows["job_id"].astype("Int64")
    rows["installed_at"] = rows["installed_at"].astype("datetime64[us, UTC]")
    return attach_attrs(session, rows)[list(INSTALLED_COLUMNS)]


def load_outcomes(session: Session, filters: MissingFilters | None = None) -> pd.DataFrame:
    """The latest install job item per (endpoint, patch), whatever its state.

    The patch view counts a pair as failed only when its latest attempt failed: a failure that
    a later job fixed is history, not a reason to push the patch again.
    """
    filters = (filters or MissingFilters()).resolve(session)
    start, end = day_bounds(filters)
    finished = func.coalesce(InstallJobItem.finished_at, InstallJobItem.updated_at)
    stmt = (
        select(
            InstallJobItem.id.label("item_id"),
            InstallJobItem.endpoint_id,
            InstallJobItem.patch_id,
            InstallJobItem.state,
            raw(InstallJobItem.finished_at),
        )
    )
    stmt = apply_scope(stmt, filters, InstallJobItem.endpoint_id, InstallJobItem.patch_id)
    if start:
        stmt = stmt.where(finished >= start)
    if end:
        stmt = stmt.where(finished < end)
    rows = fetch_frame(session, stmt)
    if rows.empty:
        return empty(OUTCOME_COLUMNS)
    rows = rows.sort_values("item_id").drop_duplicates(["endpoint_id", "patch_id"], keep="last")
    rows["finished_at"] = to_utc(rows["finished_at"])
    patches = load_patch_attrs(session, rows["patch_id"].unique().tolist())
    frame = rows.merge(patches, on="patch_id", how="left", validate="many_to_one")
    return frame[list(OUTCOME_COLUMNS)].reset_index(drop=True)


def load_endpoints(session: Session, filters: MissingFilters | None = None) -> pd.DataFrame:
    """Every endpoint the endpoint/group filters select, with its scan state (compliance base)."""
    filters = (filters or MissingFilters()).resolve(session)
    stmt = select(Endpoint.id)
    if filters.endpoint:
        stmt = stmt.where(Endpoint.hostname == filters.endpoint)
    if filters.group_ids is not None:
        stmt = stmt.where(Endpoint.group_id.in_(filters.group_ids))
    if filters.endpoint is None and filters.group_ids is None:
        frame = load_endpoint_attrs(session)
    else:
        ids = list(session.scalars(stmt))
        frame = load_endpoint_attrs(session, ids)
    return frame.sort_values("endpoint").reset_index(drop=True)[list(ENDPOINT_COLUMNS)]


def severity_counts(session: Session, third_party: pd.DataFrame) -> pd.DataFrame:
    """(severity, patches, pairs): Microsoft patches by their catalog severity in one GROUP BY,
    plus `third_party` (patchflow.catalog.vuln_query.dashboard_ratings: rated per pair, as `missing`
    shows them).

    Pairs are first counted per patch on the missing_patches index, then joined to the small
    patches table, so the join touches one row per patch instead of one per pair.
    """
    per_patch = (
        select(MissingPatch.patch_id, func.count().label("n"))
        .where(not_declined())
        .group_by(MissingPatch.patch_id)
        .subquery()
    )
    severity = fetch_frame(
        session,
        select(
            Patch.severity,
            func.count().label("patches"),
            func.sum(per_patch.c.n).label("pairs"),
        )
        .join(per_patch, per_patch.c.patch_id == Patch.id)
        .where(Patch.package_id.is_(None))
        .group_by(Patch.severity),
    )
    frames = [f for f in (severity, third_party) if not f.empty]
    frame = pd.concat(frames, ignore_index=True) if frames else severity
    if not frame.empty:
        frame = frame.astype({"patches": "int64", "pairs": "int64"})
    return frame


def state_counts(session: Session) -> pd.DataFrame:
    """(scan_state, endpoints): one GROUP BY; an endpoint missing only declined patches counts
    as up to date."""
    states = fetch_frame(
        session,
        select(Endpoint.scan_state, func.count().label("endpoints"))
        .where(Endpoint.replaces_endpoint_id.is_(None))  # awaiting approval: not counted
        .group_by(Endpoint.scan_state),
    )
    if not states.empty:
        states["endpoints"] = states["endpoints"].astype("int64")
    return _without_declined(session, states)


def _without_declined(session: Session, states: pd.DataFrame) -> pd.DataFrame:
    """An endpoint that misses only declined patches counts as up to date, not missing."""
    if session.scalar(declined_ids().limit(1)) is None:
        return states
    cleared = int(session.scalar(
        select(func.count()).select_from(Endpoint).where(
            Endpoint.scan_state == ScanState.MISSING_PATCHES.value,
            Endpoint.replaces_endpoint_id.is_(None),
            ~exists().where(MissingPatch.endpoint_id == Endpoint.id,
                            not_declined()))
    ) or 0)
    if not cleared:
        return states
    counts = dict(zip(states["scan_state"], states["endpoints"], strict=True))
    counts[ScanState.MISSING_PATCHES.value] -= cleared
    counts[ScanState.UP_TO_DATE.value] = counts.get(ScanState.UP_TO_DATE.value, 0) + cleared
    return pd.DataFrame({"scan_state": list(counts), "endpoints": [int(v) for v in
                                                                    counts.values()]})


def last_report_at(session: Session) -> dt.datetime | None:
    """When the last successful report that included the installed report ran: the default
    start of the next one's scan findings."""
    return session.scalar(
        select(func.max(ReportRun.created_at)).where(
            or_(ReportRun.kind == "all", ReportRun.kind.contains("installed")),
            ReportRun.status == "done",
        )
    )


def record_run(
    session: Session,
    kind: str,
    path: str | None,
    filters: dict[str, Any],
    status: str,
    message: str | None,
    created_by: str | None,
    created_at: dt.datetime | None = None,
) -> int:
    run = ReportRun(
        kind=kind,
        path=path,
        filters=json.dumps(filters, sort_keys=True),
        status=status,
        message=message,
        created_by=created_by,
    )
    if created_at is not None:
        run.created_at = created_at
    session.add(run)
    session.flush()
    return run.id


__all__ = [
    "SOURCE_JOB",
    "SOURCE_SCAN",
    "last_report_at",
    "load_dashboard",
    "load_endpoints",
    "load_installed",
    "load_outcomes",
    "record_run",
]


def load_dashboard(session: Session) -> dict[str, Any]:
    """The `patchflow dashboard --json` document (reports.dashboard.build_dashboard) with the
    vulnerability figures: SQL aggregates, and one rating pass over the third-party pairs."""
    vulnerable, third_party = dashboard_ratings(session)
    data = build_dashboard(severity_counts(session, third_party), state_counts(session))
    return {**data, **vulnerable}
