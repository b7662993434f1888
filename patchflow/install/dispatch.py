"""What the install flow does to a job, step by step, as plain functions over the database.

    start → resolve installers → ensure content → dispatch → sweep (until nothing is open)
    → finish

Each step reads the job's state from the database and is safe to run again: resolving skips
items that already know their installer, content already stored is not fetched again,
dispatching takes only pending items, and the sweep works from timestamps. So a flow that died
with the server is simply started again for the same job (`patchflow jobs resume`), and items
already with the agents keep their place and their deadlines.

Work is done in chunks of items, each in its own transaction, and never per item where a set
will do: a job over 50,000 endpoints costs a handful of statements per 500 items.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from models import (
    Endpoint,
    InstallJob,
    MissingPatch,
    Patch,
    PatchInstaller,
    PatchServer,
    Policy,
    ServerPatch,
)
from models.base import utcnow
from models.bulk import chunks
from models.db import session_scope
from patchflow.catalog.content import ContentError, ContentStore
from patchflow.catalog.servers import proxies_of
from patchflow.cycle import window_store
from patchflow.fleet.transactions import write_transaction
from patchflow.fleet.tree import Tree
from patchflow.http import make_session
from patchflow.install import states as st
from patchflow.install.installers import WUA, Choice, Installers, choose
from patchflow.install.items import ITEMS, add_events, event, move_many, transition
from patchflow.install.jobs import get_job, state_counts, summary_text
from patchflow.ops import faults

CONTENT_PREFIX = "/content/sha256/"


def content_path(sha256: str) -> str:
    """The server-relative URL an agent downloads from: resolved against the server it is
    enrolled with, over its pinned, authenticated connection."""
    return f"{CONTENT_PREFIX}{sha256}"


# --- start ------------------------------------------------------------------------------------


def start_job(job_id: int, flow_run_id: str | None) -> dict[str, Any]:
    """pending → running (a running job stays running: this is also the resume path)."""

    def work(session: Session) -> dict[str, Any]:
        job = get_job(session, job_id)
        if job.status not in st.JOB_FINAL:
            job.status = st.JOB_RUNNING
            job.started_at = job.started_at or utcnow()
            job.flow_run_id = flow_run_id or job.flow_run_id
        counts = state_counts(session, [job.id])[job.id]
        return {"job_id": job.id, "status": job.status, "items": sum(counts.values()),
                "open": sum(counts.get(s, 0) for s in st.OPEN)}

    return write_transaction(None, work)


# --- resolve ----------------------------------------------------------------------------------


@dataclass
class _Context:
    """What choosing installers needs, loaded once per job instead of once per item."""

    endpoints: dict[int, Any] = field(default_factory=dict)
    patches: dict[int, Any] = field(default_factory=dict)
    installers: dict[int, list[Any]] = field(default_factory=dict)
    reasons: dict[tuple[int, int], str] = field(default_factory=dict)
    vendor_ok: dict[int, bool] = field(default_factory=dict)  # endpoint → roaming + policy
    languages: dict[int, list[str] | None] = field(default_factory=dict)  # endpoint → server's


def _load_context(session: Session, pairs: list[tuple[int, int, int]]) -> _Context:
    ctx = _Context()
    endpoint_ids = sorted({e for _i, e, _p in pairs})
    patch_ids = sorted({p for _i, _e, p in pairs})
    for chunk in chunks(endpoint_ids):
        for row in session.execute(select(Endpoint.id, Endpoint.os_arch, Endpoint.os_language,
                                          Endpoint.roaming, Endpoint.group_id)
                                   .where(Endpoint.id.in_(chunk))):
            ctx.endpoints[row.id] = row
        for e, p, reason in session.execute(
            select(MissingPatch.endpoint_id, MissingPatch.patch_id, MissingPatch.reason)
            .where(MissingPatch.endpoint_id.in_(chunk), MissingPatch.patch_id.in_(patch_ids))
        ):
            ctx.reasons[(e, p)] = reason
    for patch in session.execute(select(Patch.id, Patch.kb, Patch.package_id, Patch.title)
                                 .where(Patch.id.in_(patch_ids))):
        ctx.patches[patch.id] = patch
    for inst in session.scalars(select(PatchInstaller).where(PatchInstaller.patch_id.in_(
            patch_ids)).order_by(PatchInstaller.id)):
        ctx.installers.setdefault(inst.patch_id, []).append(inst)
    tree = Tree.load(session)
    policies = {p.id: p for p in session.scalars(select(Policy))}
    servers = {s.id: s for s in session.scalars(select(PatchServer).order_by(PatchServer.id))}
    fallback = next(iter(servers), None)
    for endpoint_id, endpoint in ctx.endpoints.items():
        policy = policies.get(tree.effective_policy(endpoint.group_id) or -1)
        ctx.vendor_ok[endpoint_id] = bool(endpoint.roaming and policy and
                                          policy.roaming_microsoft)
        server = servers.get(policy.patch_server_id if policy and policy.patch_server_id
                             else fallback or -1)
        ctx.languages[endpoint_id] = (json.loads(server.filter_languages)
                                      if server is not None and server.filter_languages
                                      else None)
    return ctx


def _item_values(choice: Choice, vendor: bool) -> dict[str, Any]:
    if choice.type == WUA:
        return {"installer_type": WUA, "download_url": None, "content_sha256": None,
                "silent_switches": None, "installer_id": None}
    url = choice.url if vendor else content_path(choice.sha256 or "")
    return {"installer_type": choice.type[:16], "download_url": url,
            "content_sha256": choice.sha256, "silent_switches": (choice.switches or None),
            "installer_id": choice.installer_id}


def resolve_items(job_id: int) -> dict[str, int]:
    """Choose each pending item's installer and source (patch server, or the vendor for a
    roaming endpoint whose policy allows it); items no installer fits fail with the reason."""
    with session_scope() as session:
        pairs: list[tuple[int, int, int]] = [
            (int(i), int(e), int(p)) for i, e, p in session.execute(
                select(ITEMS.c.id, ITEMS.c.endpoint_id, ITEMS.c.patch_id)
                .where(ITEMS.c.job_id == job_id, ITEMS.c.state == st.PENDING,
                       ITEMS.c.installer_type.is_(None)))]
        if not pairs:
            return {"resolved": 0, "failed": 0}
        ctx = _load_context(session, pairs)
    groups: dict[tuple[tuple[str, Any], ...], list[int]] = defaultdict(list)
    failures: dict[str, list[int]] = defaultdict(list)
    for item_id, endpoint_id, patch_id in pairs:
        endpoint = ctx.endpoints.get(endpoint_id)
        patch = ctx.patches.get(patch_id)
        if endpoint is None or patch is None:
            failures["the endpoint or the patch no longer exists"].append(item_id)
            continue
        choice, why = choose(
            ctx.installers.get(patch_id, []), is_microsoft=bool(patch.kb and not patch.package_id),
            os_arch=endpoint.os_arch, language=endpoint.os_language,
            reason=ctx.reasons.get((endpoint_id, patch_id)),
            server_languages=ctx.languages.get(endpoint_id))
        if choice is None:
            failures[why or "no installer fits this endpoint"].append(item_id)
            continue
        values = _item_values(choice, ctx.vendor_ok.get(endpoint_id, False))
        groups[tuple(sorted(values.items()))].append(item_id)

    def write(session: Session, key: tuple[tuple[str, Any], ...], ids: list[int]) -> None:
        session.execute(update(ITEMS).where(ITEMS.c.id.in_(ids), ITEMS.c.state == st.PENDING)
                        .values(updated_at=utcnow(), **dict(key)))

    for key, ids in groups.items():
        for chunk in chunks(ids):
            write_transaction(None, lambda s, k=key, c=chunk: write(s, k, c))  # type: ignore[misc]
    failed = 0
    for why, ids in failures.items():
        failed += _fail(ids, f"not installable here: {why}")
    return {"resolved": sum(len(v) for v in groups.values()), "failed": failed}


def _fail(ids: list[int], message: str, from_states: tuple[str, ...] = (st.PENDING,)) -> int:
    moved = 0
    for chunk in chunks(ids):
        def work(session: Session, c: list[int] = chunk) -> int:
            return len(move_many(session, c, st.FAILED, from_states, message=message,
                                 values={"finished_at": utcnow()}))
        moved += write_transaction(None, work)
    return moved


# --- content ----------------------------------------------------------------------------------


def content_plan(job_id: int, store: ContentStore | None = None) -> list[dict[str, Any]]:
    """The files pending items will fetch from this server that the store does not hold yet:
    [{"sha256", "url" (the vendor's), "proxies"}], one per file whatever the endpoint count."""
    store = store or ContentStore()
    with session_scope() as session:
        rows = session.execute(
            select(ITEMS.c.content_sha256, ITEMS.c.patch_id, ITEMS.c.installer_id).distinct()
            .where(ITEMS.c.job_id == job_id, ITEMS.c.state == st.PENDING,
                   ITEMS.c.download_url.like(f"{CONTENT_PREFIX}%"))).all()
        wanted = [row for row in rows if not store.has(row.content_sha256)]
        patch_ids = sorted({row.patch_id for row in wanted})
        catalog = Installers([found for chunk in chunks(patch_ids) for found in session.execute(
            select(PatchInstaller.id, PatchInstaller.patch_id, PatchInstaller.url,
                   PatchInstaller.sha256).where(PatchInstaller.patch_id.in_(chunk))
            .order_by(PatchInstaller.id))])
        plan: dict[str, dict[str, Any]] = {}
        for row in wanted:
            sha, patch_id = row.content_sha256, row.patch_id
            if sha in plan:
                continue
            found = catalog.of(row)
            url = found.url if found is not None else None
            server = session.scalar(
                select(PatchServer).join(ServerPatch, ServerPatch.server_id == PatchServer.id)
                .where(ServerPatch.patch_id == patch_id)
                .order_by(PatchServer.proxy_url.is_(None), PatchServer.id).limit(1))
            plan[sha] = {"sha256": sha, "url": url,
                         "proxies": proxies_of(server) if server is not None else None}
    return list(plan.values())


def fetch_content(plan: list[dict[str, Any]], store: ContentStore | None = None,
                  log: Callable[[str], None] = lambda _m: None) -> dict[str, str]:
    """Download each planned file (resume, proxy, SHA-256 check, atomic rename); returns
    {sha256: one-line error} for the files that could not be stored. Never raises for a bad
    or unreachable file: that is an outcome for the items, not a crash of the flow."""
    store = store or ContentStore()
    errors: dict[str, str] = {}
    # urllib3 logs each retry as a warning; the outcome (and its one-line reason) is reported
    # on the items, so the retries stay out of the flow's console.
    retries_log = logging.getLogger("urllib3.connectionpool")
    level = retries_log.level
    retries_log.setLevel(logging.ERROR)
    try:
        for entry in plan:
            _fetch_one(entry, store, errors, log)
    finally:
        retries_log.setLevel(level)
    return errors


def _fetch_one(entry: dict[str, Any], store: ContentStore, errors: dict[str, str],
               log: Callable[[str], None]) -> None:
    sha, url = entry["sha256"], entry["url"]
    if not url or not str(url).startswith(("http://", "https://")):
        errors[sha] = f"the catalog has no download URL for {sha[:12]}…"
        return
    try:
        with make_session(proxies=entry.get("proxies"), retries=2, backoff=0.5) as http:
            store.download(url, sha, http)
        log(f"stored {url} ({sha[:12]}…)")
    except ContentError as exc:
        errors[sha] = str(exc)
        log(f"content refused: {exc}")


# --- dispatch ---------------------------------------------------------------------------------


def dispatch(job_id: int, content_errors: dict[str, str] | None = None) -> dict[str, int]:
    """Fail the pending items whose file could not be verified (never offered to an agent),
    then hand the other first-attempt pending items to their agents (those whose maintenance
    window is closed wait for the sweep to offer them when it opens)."""
    failed = 0
    with session_scope() as session:
        if get_job(session, job_id).status != st.JOB_RUNNING:
            return {"dispatched": 0, "failed": 0, "waiting": 0}
    for sha, error in (content_errors or {}).items():
        with session_scope() as session:
            ids = list(session.scalars(select(ITEMS.c.id).where(
                ITEMS.c.job_id == job_id, ITEMS.c.state == st.PENDING,
                ITEMS.c.content_sha256 == sha)))
        failed += _fail(ids, f"content check failed, not offered to any endpoint: {error}")
    with session_scope() as session:
        ids = list(session.scalars(select(ITEMS.c.id).where(
            ITEMS.c.job_id == job_id, ITEMS.c.state == st.PENDING,
            ITEMS.c.installer_type.is_not(None), ITEMS.c.attempts == 0).order_by(ITEMS.c.id)))
    dispatched = _dispatch_ids(ids, "offered to the agent")
    # What is left pending waits for its maintenance window (or was cancelled meanwhile).
    return {"dispatched": dispatched, "failed": failed, "waiting": len(ids) - dispatched}


def _dispatch_ids(ids: list[int], message: str) -> int:
    """The one place items are handed to agents (first offers and retries alike), so the one
    place maintenance windows are enforced: an item whose endpoint's policy has windows, none
    open now, stays pending with a note saying when the next one opens (the sweep offers it
    then); the others go, each with the time its window closes (its restart deadline)."""
    moved = 0
    for restart_until, allowed in _window_gate(ids).items():
        for chunk in chunks(allowed):
            def work(session: Session, c: list[int] = chunk,
                     until: dt.datetime | None = restart_until) -> int:
                now = utcnow()
                return len(move_many(
                    session, c, st.DISPATCHED, (st.PENDING,), message=message,
                    values={"attempts": ITEMS.c.attempts + 1, "dispatched_at": now,
                            "finished_at": None, "exit_code": None, "restart_until": until},
                    now=now))
            moved += write_transaction(None, work)
            faults.point("install.after_dispatch")  # test hook: items offered, flow not done
    return moved


def _window_gate(ids: list[int]) -> dict[dt.datetime | None, list[int]]:
    """The items that may go now, by restart deadline; the waiting ones get their note."""
    if not ids:
        return {}
    now = utcnow()
    with session_scope() as session:
        verdict = window_store.gate(session, ids, now)
    by_note: dict[str, list[int]] = defaultdict(list)
    for item_id, note in verdict.waiting.items():
        by_note[note].append(item_id)
    for note, waiting in by_note.items():
        for chunk in chunks(sorted(waiting)):
            write_transaction(None, lambda s, c=chunk, n=note: _note_waiting(s, c, n, now))  # type: ignore[misc]
    allowed: dict[dt.datetime | None, list[int]] = defaultdict(list)
    for item_id, closes in sorted(verdict.allowed.items()):
        allowed[closes].append(item_id)
    return allowed


def _note_waiting(session: Session, ids: list[int], note: str, now: dt.datetime) -> None:
    """Put the note on the pending items that do not carry it yet, with one event each: the
    trail shows when an item started waiting, not every sweep that found it still waiting.
    `updated_at` is left alone: it times a retry's delay."""
    fresh = list(session.scalars(select(ITEMS.c.id).where(
        ITEMS.c.id.in_(ids), ITEMS.c.state == st.PENDING,
        or_(ITEMS.c.message.is_(None), ITEMS.c.message != note)).with_for_update()))
    if fresh:
        session.execute(update(ITEMS).where(ITEMS.c.id.in_(fresh), ITEMS.c.state == st.PENDING)
                        .values(message=note))
        add_events(session, [event(i, st.PENDING, now, note) for i in fresh])


# --- sweep ------------------------------------------------------------------------------------


def sweep(job_id: int, retry_delay_s: float) -> dict[str, Any]:
    """One look at the job: items past their deadline fail with "no result from agent",
    retries whose delay has passed are offered again, and so are first offers held back by a
    maintenance window (each only if its window is open now); returns the counts by state."""
    now = utcnow()
    with session_scope() as session:
        job = get_job(session, job_id)
        status, timeout = job.status, job.item_timeout_s
        cutoff = now - _seconds(timeout)
        stale = session.execute(
            select(ITEMS.c.id, ITEMS.c.attempts).where(
                ITEMS.c.job_id == job_id, ITEMS.c.state.in_(st.IN_FLIGHT),
                ITEMS.c.dispatched_at < cutoff)).all()
        due = list(session.scalars(select(ITEMS.c.id).where(
            ITEMS.c.job_id == job_id, ITEMS.c.state == st.PENDING, ITEMS.c.attempts > 0,
            ITEMS.c.updated_at <= now - _seconds(retry_delay_s))))
        # First offers held back by a maintenance window: offered when one opens.
        held = list(session.scalars(select(ITEMS.c.id).where(
            ITEMS.c.job_id == job_id, ITEMS.c.state == st.PENDING, ITEMS.c.attempts == 0,
            ITEMS.c.installer_type.is_not(None)).order_by(ITEMS.c.id)))
    timed_out = 0
    if stale:
        message = f"{st.NO_RESULT} within {timeout} s of dispatch"

        def expire(session: Session) -> int:
            return sum(transition(session, item_id, st.FAILED, st.IN_FLIGHT, message=message,
                                  values={"finished_at": now},
                                  where=[ITEMS.c.attempts == attempts], now=now)
                       for item_id, attempts in stale)

        timed_out = write_transaction(None, expire)
    running = status == st.JOB_RUNNING
    retried = _dispatch_ids(due, "offered again (retry)") if due and running else 0
    released = (_dispatch_ids(held, "offered to the agent (maintenance window open)")
                if held and running else 0)
    with session_scope() as session:
        counts = state_counts(session, [job_id])[job_id]
    return {"status": status, "counts": counts, "timed_out": timed_out, "retried": retried,
            "released": released, "open": sum(counts.get(s, 0) for s in st.OPEN)}


def _seconds(value: float) -> dt.timedelta:
    return dt.timedelta(seconds=float(value))


def await_results(job_id: int, retry_delay_s: float, poll_seconds: float,
                  log: Callable[[str], None] = lambda _m: None,
                  sleep: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Sweep until no item is open. Terminates: every in-flight item either reports or passes
    its deadline, retries are bounded by max_attempts, and cancelling closes every item."""
    sleep = sleep or time.sleep
    last = None
    while True:
        state = sweep(job_id, retry_delay_s)
        text = summary_text(state["counts"])
        if text != last:
            log(f"job {job_id}: {text}")
            last = text
        if state["open"] == 0:
            return state
        sleep(poll_seconds)


# --- finish -----------------------------------------------------------------------------------


def finish_job(job_id: int) -> dict[str, Any]:
    """done (or stays cancelled), with the summary as the job's message."""

    def work(session: Session) -> dict[str, Any]:
        job = get_job(session, job_id)
        counts = state_counts(session, [job.id])[job.id]
        open_ = sum(counts.get(s, 0) for s in st.OPEN)
        text = summary_text(counts)
        if job.status != st.JOB_CANCELLED and not open_:
            job.status = st.JOB_DONE
            job.finished_at = utcnow()
            job.message = text
        return {"job_id": job.id, "status": job.status, "summary": text,
                "items": sum(counts.values()),
                "succeeded": counts.get(st.SUCCEEDED, 0), "failed": counts.get(st.FAILED, 0),
                "reboot_pending": counts.get(st.REBOOT_PENDING, 0),
                "cancelled": counts.get(st.CANCELLED, 0), "open": open_}

    return write_transaction(None, work)


def unfinished_jobs() -> list[int]:
    """Jobs a flow should be driving: for `jobs resume` after a restart."""
    with session_scope() as session:
        return list(session.scalars(select(InstallJob.id).where(
            InstallJob.status.in_([st.JOB_PENDING, st.JOB_RUNNING])).order_by(InstallJob.id)))
