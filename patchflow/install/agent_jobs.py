"""The agent's side of install jobs, behind `GET /api/v1/agent/jobs` and
`POST /api/v1/agent/jobs/{id}/result` (patchflow.fleet.jobs calls these).

To an agent, a "job" is one install job item: one patch for this endpoint, with where to get
the file, its SHA-256, the installer type and switches, whether it may restart, and for a
package the installed program it upgrades (patchflow/install/upgrades.py). An item of a
rollback is `kind` "uninstall" with the uninstall spec instead (patchflow/install/rollback.py).
Polling is the fleet's hot path (every agent, every minute), so the no-work answer comes from
the in-memory work index (patchflow.fleet.agent_cache): one query a few seconds for the whole
fleet, none per poll.

Results are recorded idempotently: the agent puts a `result_id` (and the attempt it ran) in
`details`; a final result whose id is already stored is acknowledged and ignored, so a result
re-sent after a lost response is recorded once. A result for an older attempt of an item that
was retried meanwhile is ignored too.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from models import InstalledProgram, InstallJob, Patch, PatchInstaller
from models.base import utcnow
from models.db import get_engine
from patchflow import config
from patchflow.errors import NotFoundError
from patchflow.fleet.agent_cache import work_of
from patchflow.fleet.transactions import db_slot, write_transaction
from patchflow.install import states as st
from patchflow.install.installers import WUA, Installers, file_name_of
from patchflow.install.items import ITEMS, transition
from patchflow.install.rollback import UNINSTALL
from patchflow.install.upgrades import program_target
from sources.filters import package_name

log = logging.getLogger(__name__)
JOBS = cast(Table, InstallJob.__table__)
_POLL = (
    select(ITEMS.c.id, ITEMS.c.job_id, ITEMS.c.patch_id, ITEMS.c.attempts,
           ITEMS.c.download_url, ITEMS.c.content_sha256, ITEMS.c.installer_type,
           ITEMS.c.silent_switches, ITEMS.c.installer_id, ITEMS.c.restart_until,
           ITEMS.c.uninstall, JOBS.c.allow_restart, JOBS.c.action)
    .join(JOBS, JOBS.c.id == ITEMS.c.job_id)
    .where(ITEMS.c.endpoint_id == bindparam("endpoint"),
           ITEMS.c.state == st.DISPATCHED, JOBS.c.status == st.JOB_RUNNING)
    .order_by(ITEMS.c.id)
)
MAX_JOBS_PER_POLL = 20
# Every endpoint with something to poll for, in one query for the whole fleet (agent_cache).
_WITH_WORK = (
    select(ITEMS.c.endpoint_id).distinct()
    .join(JOBS, JOBS.c.id == ITEMS.c.job_id)
    .where(ITEMS.c.state == st.DISPATCHED, JOBS.c.status == st.JOB_RUNNING)
)


def endpoints_with_work(url: str) -> set[int]:
    with db_slot(url), get_engine(url).connect() as conn:
        return set(conn.scalars(_WITH_WORK))


def known_idle(url: str, endpoint_id: int) -> bool:
    """True when the in-memory work index, fresh, says this endpoint has nothing to do."""
    return work_of(get_engine(url)).known_idle(endpoint_id)


def poll(endpoint_id: int) -> list[dict[str, Any]]:
    """The items dispatched to this endpoint, as the agent runs them. An endpoint the work
    index says is idle costs no query (see patchflow.fleet.agent_cache)."""
    url = config.database_url()  # the slot is shared with the route's authentication
    if not work_of(get_engine(url)).has_work(endpoint_id, lambda: endpoints_with_work(url)):
        return []
    with db_slot(url), get_engine(url).connect() as conn:
        rows = conn.execute(_POLL, {"endpoint": endpoint_id}).fetchmany(MAX_JOBS_PER_POLL)
        if not rows:
            return []
        patch_ids = sorted({r.patch_id for r in rows})
        patches = {p.id: p for p in conn.execute(
            select(Patch.id, Patch.kb, Patch.package_id, Patch.version, Patch.title,
                   Patch.vendor).where(Patch.id.in_(patch_ids)))}
        installers = Installers(list(conn.execute(
            select(PatchInstaller.id, PatchInstaller.patch_id, PatchInstaller.url,
                   PatchInstaller.sha256, PatchInstaller.arch, PatchInstaller.product_code,
                   PatchInstaller.upgrade_code, PatchInstaller.apps_and_features)
            .where(PatchInstaller.patch_id.in_(patch_ids)).order_by(PatchInstaller.id))))
        programs: list[dict[str, Any]] = []
        if any(p.package_id for p in patches.values()):
            programs = [dict(p._mapping) for p in conn.execute(
                select(InstalledProgram.name, InstalledProgram.version,
                       InstalledProgram.publisher, InstalledProgram.product_code,
                       InstalledProgram.upgrade_code, InstalledProgram.arch)
                .where(InstalledProgram.endpoint_id == endpoint_id))]
    return [_payload(row, patches[row.patch_id], installers.of(row), programs) for row in rows]


def _payload(row: Any, patch: Any, catalog: Any | None,
             programs: list[dict[str, Any]]) -> dict[str, Any]:
    patch_info = {"id": patch.id, "kb": patch.kb, "package_id": patch.package_id,
                  "version": patch.version, "title": patch.title, "vendor": patch.vendor,
                  "package_name": package_name(patch.title, patch.version)
                  if patch.package_id else None}
    # A restart only inside the maintenance window the item was dispatched in: an agent that
    # picks the item up after the window closed installs it without restarting.
    restart = bool(row.allow_restart) and (row.restart_until is None
                                           or utcnow() < row.restart_until)
    if row.action == UNINSTALL:
        return _uninstall_payload(row, patch_info, restart)
    if row.installer_type == WUA:
        installer: dict[str, Any] = {"type": WUA, "kb": patch.kb}
    else:
        names = []
        if catalog is not None and catalog.apps_and_features:
            try:
                names = [e.get("DisplayName") for e in json.loads(catalog.apps_and_features)
                         if isinstance(e, dict) and e.get("DisplayName")]
            except ValueError:
                names = []
        installer = {
            "type": row.installer_type,
            "url": row.download_url,
            "sha256": row.content_sha256,
            "file_name": file_name_of(catalog.url) if catalog is not None else None,
            "switches": row.silent_switches,
            "arch": catalog.arch if catalog is not None else None,
            "product_code": catalog.product_code if catalog is not None else None,
            "upgrade_code": catalog.upgrade_code if catalog is not None else None,
            "display_names": names,
        }
    job = {"id": row.id, "job_id": row.job_id, "kind": "install", "attempt": row.attempts,
           "allow_restart": restart, "patch": patch_info,
           "installer": installer}
    if patch.package_id and row.installer_type != WUA:
        # The installed entry this upgrade replaces, found with the scan's rules, so that an
        # agent simulating the install needs none of the scan's modules.
        job["program"] = program_target(programs, patch_info, installer)
    return job


def _uninstall_payload(row: Any, patch_info: dict[str, Any], restart: bool) -> dict[str, Any]:
    """A rollback's item: `kind` "uninstall" and the spec under `uninstall`, and no `installer`
    key, so an agent older than rollbacks refuses it as malformed (reported failed) instead of
    taking it for an install."""
    try:
        spec = json.loads(row.uninstall or "null")
    except ValueError:
        spec = None
    return {"id": row.id, "job_id": row.job_id, "kind": UNINSTALL, "attempt": row.attempts,
            "allow_restart": restart, "patch": patch_info, "uninstall": spec}


def record_result(endpoint_id: int, item_id: int, result: dict[str, Any]) -> None:
    """Apply an agent's progress or final result to its item (see the module docstring)."""
    write_transaction(None, lambda session: _record(session, endpoint_id, item_id, result))


def _record(session: Session, endpoint_id: int, item_id: int, result: dict[str, Any]) -> None:
    row = session.execute(
        select(ITEMS.c.endpoint_id, ITEMS.c.state, ITEMS.c.attempts, ITEMS.c.result_id,
               ITEMS.c.message, JOBS.c.max_attempts, JOBS.c.status.label("job_status"))
        .join(JOBS, JOBS.c.id == ITEMS.c.job_id).where(ITEMS.c.id == item_id)).first()
    if row is None or row.endpoint_id != endpoint_id:
        raise NotFoundError(f"no job {item_id} for this agent")
    state = str(result.get("state"))
    details = result.get("details") or {}
    attempt = details.get("attempt")
    if isinstance(attempt, int) and attempt != row.attempts:
        log.info("item %s: result of attempt %s ignored (attempt %s is current)", item_id,
                 attempt, row.attempts)
        return
    same_attempt = [ITEMS.c.attempts == row.attempts]
    message = (result.get("message") or "").strip() or None
    if state in st.PROGRESS:
        transition(session, item_id, state, st.PROGRESS_FROM[state], message=message,
                   where=same_attempt)
        return
    result_id = str(details.get("result_id") or "")[:64] or None
    if result_id is not None and result_id == row.result_id:
        return  # the same result again (a retried POST): recorded once
    allowed = list(st.IN_FLIGHT)
    if st.may_override(row.state, row.message):
        allowed.append(row.state)
    exit_code = result.get("exit_code")
    text = message or st.describe_exit(exit_code)
    now = utcnow()
    retryable = st.is_retryable(exit_code) or details.get("retryable") is True
    if (state == st.FAILED and retryable and row.attempts < row.max_attempts
            and row.job_status == st.JOB_RUNNING):
        note = f"retry {row.attempts + 1} of {row.max_attempts} queued"
        transition(
            session, item_id, st.PENDING, allowed, message=f"{text}; {note}",
            exit_code=exit_code, values={"result_id": result_id}, where=same_attempt, now=now,
            trail=[(st.FAILED, f"attempt {row.attempts}: {text}", exit_code),
                   (st.PENDING, note, None)])
        return
    if row.state not in allowed:
        log.info("item %s is %s: a further result is ignored", item_id, row.state)
        return
    if row.state in (st.CANCELLED, st.FAILED) and row.state in allowed:
        text = f"{text} (reported after the item was marked {row.state!r})"
    transition(session, item_id, state, allowed, message=text, exit_code=exit_code,
               values={"result_id": result_id, "finished_at": now}, where=same_attempt,
               now=now)
