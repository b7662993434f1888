"""Install jobs: created from the selection or in one step, listed, shown, cancelled, summed up.

A job is a set of (patch, endpoint) items plus restart settings. Creating one checks everything
that can be checked before anything runs: the EULAs (a clear refusal names the patch and the
commands that fix it), and that each pair is still missing. The job's state lives wholly in the
database, so the flow that drives it can die and be started again (`jobs resume`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from models import Endpoint, InstallItemEvent, InstallJob, InstallJobItem, InstallSelection, Patch
from models.base import utcnow
from models.bulk import chunks
from patchflow.errors import NotFoundError, UserError
from patchflow.install import states as st
from patchflow.install.eula import refuse_unaccepted
from patchflow.install.items import ITEMS, add_events, event, move_many
from patchflow.install.outcome import job_outcome
from patchflow.install.selection import pairs_for, refuse_declined
from patchflow.install.settings import InstallSettings
from patchflow.scanning.missing_query import not_declined

STATE_ORDER = [st.PENDING, st.DISPATCHED, st.DOWNLOADING, st.INSTALLING, st.SUCCEEDED,
               st.FAILED, st.REBOOT_PENDING, st.CANCELLED]


def create_job(
    session: Session,
    pairs: Sequence[tuple[int, int]],
    created_by: str,
    *,
    allow_restart: bool = False,
    trigger: str = "manual",
    settings: InstallSettings | None = None,
) -> InstallJob:
    """A job with one pending item per (patch_id, endpoint_id) pair, in the caller's
    transaction. Refuses (UserError, nothing written) when a patch is declined or its EULA is
    not accepted: every route to a job (CLI, console, API, cycle) passes here."""
    unique = sorted(set((int(p), int(e)) for p, e in pairs))
    if not unique:
        raise UserError("nothing to install: select patches first (`patchflow install select`)")
    refuse_declined(session, {p for p, _e in unique})
    refuse_unaccepted(session, {p for p, _e in unique})
    settings = settings or InstallSettings.from_config()
    now = utcnow()
    job = InstallJob(created_by=(created_by or "unknown")[:128], created_at=now,
                     trigger=trigger[:16], allow_restart=allow_restart, status=st.JOB_PENDING,
                     max_attempts=settings.max_attempts, item_timeout_s=settings.item_timeout_s)
    session.add(job)
    session.flush()
    session.execute(insert(ITEMS), [
        {"job_id": job.id, "patch_id": p, "endpoint_id": e, "state": st.PENDING, "attempts": 0,
         "updated_at": now} for p, e in unique])
    ids = list(session.scalars(select(ITEMS.c.id).where(ITEMS.c.job_id == job.id)))
    who = f"created by {job.created_by}" + (f" ({trigger})" if trigger != "manual" else "")
    add_events(session, [event(i, st.PENDING, now, who) for i in ids])
    return job


def start_from_selection(session: Session, created_by: str, allow_restart: bool = False,
                         settings: InstallSettings | None = None) -> InstallJob:
    """`install start`: the whole selection becomes one job and the selection is emptied.
    Pairs no longer missing (installed meanwhile, rescanned) are dropped, not installed."""
    selected = session.execute(
        select(InstallSelection.patch_id, InstallSelection.endpoint_id)).tuples().all()
    if not selected:
        raise UserError("the selection is empty: select patches first "
                        "(`patchflow install select PATCH --endpoints H1,H2 | --all-affected`)")
    still = _still_missing(session, selected)
    if not still:
        raise UserError("none of the selected pairs is missing any more (per the last scans); "
                        "`patchflow install refresh` clears the selection")
    job = create_job(session, still, created_by, allow_restart=allow_restart, settings=settings)
    session.execute(delete(InstallSelection))
    return job


def _still_missing(session: Session, pairs: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    from models import MissingPatch

    found: list[tuple[int, int]] = []
    wanted = list(pairs)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.extend(session.execute(
            select(MissingPatch.patch_id, MissingPatch.endpoint_id)
            .join(Endpoint, Endpoint.id == MissingPatch.endpoint_id)
            .where(tuple_(MissingPatch.patch_id, MissingPatch.endpoint_id).in_(chunk),
                   Endpoint.revoked.is_(False),
                   not_declined())
        ).tuples().all())
    return found


def install_now(session: Session, ref: str, endpoints: list[str] | None, all_affected: bool,
                created_by: str, allow_restart: bool = False,
                settings: InstallSettings | None = None) -> InstallJob:
    """`install now PATCH --endpoints …`: select and start in one step, leaving the rest of the
    selection alone."""
    patch, ids = pairs_for(session, ref, endpoints, all_affected)
    return create_job(session, [(patch.id, e) for e in ids], created_by,
                      allow_restart=allow_restart, settings=settings)


def get_job(session: Session, job_id: int) -> InstallJob:
    job = session.get(InstallJob, int(job_id))
    if job is None:
        raise NotFoundError(f"no install job {job_id}")
    return job


def state_counts(session: Session, job_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {int(j): {} for j in job_ids}
    for chunk in chunks(list(job_ids)):
        for job_id, state, n in session.execute(
            select(ITEMS.c.job_id, ITEMS.c.state, func.count())
            .where(ITEMS.c.job_id.in_(chunk)).group_by(ITEMS.c.job_id, ITEMS.c.state)
        ):
            counts[int(job_id)][str(state)] = int(n)
    return counts


def summary_text(counts: dict[str, int]) -> str:
    """'3 succeeded, 1 failed, 1 reboot pending' (+ what is still open or cancelled)."""
    parts = [f"{counts.get(s, 0)} {s}" for s in (st.SUCCEEDED, st.FAILED, st.REBOOT_PENDING)]
    open_ = sum(counts.get(s, 0) for s in st.OPEN)
    if open_:
        parts.append(f"{open_} open")
    if counts.get(st.CANCELLED):
        parts.append(f"{counts[st.CANCELLED]} cancelled")
    return ", ".join(parts)


def job_to_dict(job: InstallJob, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "outcome": job_outcome(job.status, counts),
        "trigger": job.trigger,
        "action": job.action or "install",
        "created_by": job.created_by,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "allow_restart": job.allow_restart,
        "max_attempts": job.max_attempts,
        "item_timeout_s": job.item_timeout_s,
        "flow_run_id": job.flow_run_id,
        "message": job.message,
        "items": sum(counts.values()),
        "counts": {s: counts.get(s, 0) for s in STATE_ORDER},
        "summary": summary_text(counts),
    }


def list_jobs(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    jobs = list(session.scalars(select(InstallJob).order_by(InstallJob.id.desc()).limit(limit)))
    counts = state_counts(session, [j.id for j in jobs])
    return [job_to_dict(j, counts[j.id]) for j in jobs]


def show_job(session: Session, job_id: int, events: bool = True) -> dict[str, Any]:
    """The job, each item (endpoint, patch, state, attempts, exit code, message, times) and,
    with `events`, each item's timestamped trail."""
    job = get_job(session, job_id)
    rows = session.execute(
        select(InstallJobItem, Endpoint.hostname, Patch.kb, Patch.ukey, Patch.title)
        .join(Endpoint, Endpoint.id == InstallJobItem.endpoint_id)
        .join(Patch, Patch.id == InstallJobItem.patch_id)
        .where(InstallJobItem.job_id == job.id)
        .order_by(Endpoint.hostname, Patch.id)).all()
    trail: dict[int, list[dict[str, Any]]] = {}
    if events:
        for e in session.scalars(
            select(InstallItemEvent).join(InstallJobItem,
                                          InstallJobItem.id == InstallItemEvent.item_id)
            .where(InstallJobItem.job_id == job.id).order_by(InstallItemEvent.id)
        ):
            trail.setdefault(e.item_id, []).append({
                "state": e.state, "at": e.at.isoformat(), "exit_code": e.exit_code,
                "message": e.message})
    items = []
    counts: dict[str, int] = {}
    for item, hostname, kb, ukey, title in rows:
        counts[item.state] = counts.get(item.state, 0) + 1
        entry = {
            "id": item.id, "endpoint": hostname, "patch_id": item.patch_id, "patch": kb or ukey,
            "title": title, "state": item.state, "attempts": item.attempts,
            "exit_code": item.exit_code, "message": item.message,
            "installer_type": item.installer_type, "download_url": item.download_url,
            "sha256": item.content_sha256,
            "dispatched_at": item.dispatched_at.isoformat() if item.dispatched_at else None,
            "finished_at": item.finished_at.isoformat() if item.finished_at else None,
            "updated_at": item.updated_at.isoformat() if item.updated_at else None,
        }
        if events:
            entry["events"] = trail.get(item.id, [])
        items.append(entry)
    return {**job_to_dict(job, counts), "items_detail": items}


def fail_items_for_content(session: Session, sha256: str, message: str) -> list[int]:
    """Fail every in-flight item that waits for content file `sha256` (the server's copy was
    found tampered and quarantined): the agents cannot get it, and a clear reason beats a
    later "no result from agent". Pending items are left: the flow fetches content again
    before it dispatches them."""
    ids = list(session.scalars(select(ITEMS.c.id).where(
        ITEMS.c.content_sha256 == sha256.lower(), ITEMS.c.state.in_(st.IN_FLIGHT))))
    now = utcnow()
    return move_many(session, ids, st.FAILED, st.IN_FLIGHT, message=message,
                     values={"finished_at": now}, now=now)


def cancel_job(session: Session, job_id: int, who: str) -> dict[str, Any]:
    """Cancel every item not finished yet. An install already running on an endpoint cannot be
    stopped from here; if its result arrives it is still recorded (the machine's truth wins)."""
    job = get_job(session, job_id)
    if job.status in st.JOB_FINAL:
        raise UserError(f"install job {job.id} is already {job.status}")
    open_ids = list(session.scalars(
        select(ITEMS.c.id).where(ITEMS.c.job_id == job.id, ITEMS.c.state.in_(st.OPEN))))
    now = utcnow()
    moved = move_many(session, open_ids, st.CANCELLED, st.OPEN,
                      message=f"cancelled by {who}", values={"finished_at": now}, now=now)
    session.execute(update(InstallJob).where(InstallJob.id == job.id).values(
        status=st.JOB_CANCELLED, finished_at=now, message=f"cancelled by {who}"))
    counts = state_counts(session, [job.id])[job.id]
    session.refresh(job)
    return {**job_to_dict(job, counts), "cancelled_items": len(moved)}

