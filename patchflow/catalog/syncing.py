"""The sync service: a patch server's sync state, progress, stop flag and "store one parsed
document", shared by every upstream connector (patchflow/upstreams/).

A sync is begun (status Running) and finished (Successful / Failed / Stopped with one line) on
the patch server row, which is what administrators and `patchflow sync` watch. Connectors
report progress through `progress()`, which is also where the administrator's stop request is
seen: it raises SyncStopped between documents or pages, never inside one. Each document is
stored in its own transaction together with its bookkeeping row (sync_documents), so an
interrupted sync leaves the catalog consistent and a rerun resumes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests
from sqlalchemy.orm import Session

from models import PatchServer
from models.base import utcnow
from models.db import session_scope
from models.enums import SyncStatus
from patchflow.catalog import servers as server_svc
from patchflow.catalog.catalog_store import document_unchanged, record_document, store_document
from patchflow.catalog.content_source import missing_content, prefetch
from patchflow.http import make_session
from patchflow.ops import faults
from sources.filters import Filters
from sources.records import ParsedDocument, SourceError


class SyncStopped(Exception):
    """The administrator asked this sync to stop."""


@dataclass
class BatchResult:
    """What a batch of documents did; summed over a sync for its one-line message."""

    stored: int = 0  # documents stored
    skipped: int = 0  # unchanged
    failed: int = 0
    patches: int = 0
    errors: list[str] = field(default_factory=list)
    stopped: bool = False


def server_row(session: Session, server_id: int) -> PatchServer:
    """The patch server being synced, by id (its name was looked up once, at begin)."""
    server = session.get(PatchServer, server_id)
    if server is None:
        raise SourceError(f"patch server #{server_id} was deleted during the sync")
    return server


def filters_of(server: PatchServer) -> Filters:
    f = server_svc.filters_of(server)
    return Filters.from_lists(f["categories"], f["languages"], f["products"])


def http_for(server: PatchServer) -> requests.Session:
    """An HTTP session through the patch server's proxy, with retries and timeouts."""
    return make_session(proxies=server_svc.proxies_of(server))


def begin(server_name: str, flow_run_id: str | None) -> int:
    """Mark the server Running (and clear an old stop request); returns its id: the only time
    a sync looks the name up."""
    with session_scope() as session:
        server = server_svc.get_server(session, server_name)
        now = utcnow()
        server.sync_status = SyncStatus.RUNNING
        server.sync_status_at = now
        server.sync_started_at = now
        server.sync_finished_at = None
        server.sync_message = "starting"
        server.sync_stop_requested = False
        server.sync_flow_run_id = flow_run_id
        return server.id


def finish(server_id: int, status: str, message: str) -> None:
    with session_scope() as session:
        server = server_row(session, server_id)
        now = utcnow()
        server.sync_status = status
        server.sync_status_at = now
        server.sync_finished_at = now
        server.sync_message = message[:2000]
        server.sync_stop_requested = False


def progress(server_id: int, message: str) -> None:
    """Show where the sync is; raises SyncStopped when the administrator asked it to stop."""
    with session_scope() as session:
        server = server_row(session, server_id)
        server.sync_message = message
        if server.sync_stop_requested:
            raise SyncStopped()


def unchanged(server_id: int, source: str, key: str, content_hash: str) -> bool:
    """Whether this document was stored with these bytes by the last successful sync."""
    with session_scope() as session:
        return document_unchanged(session, server_id, source, key, content_hash)


def store(server_id: int, source: str, doc: ParsedDocument, filters: Filters,
          result: BatchResult, *, checked: bool = False) -> None:
    """Store one parsed document with its bookkeeping row in one transaction. An unchanged
    document is skipped, unless the caller already compared its hash (`checked`): each
    document is compared once."""
    with session_scope() as session:
        if not checked and document_unchanged(session, server_id, source, doc.key,
                                              doc.content_hash):
            result.skipped += 1
            return
        stored = store_document(session, server_id, doc, filters)
        message = "; ".join(doc.errors[:3]) if doc.errors else None
        record_document(session, server_id, source, doc.key, content_hash=doc.content_hash,
                        release_date=doc.release_date, status="ok", message=message,
                        patches=stored.offered)
        session.flush()
        faults.point("sync.before_commit")  # test hook: written, not committed
    result.stored += 1
    result.patches += stored.offered
    result.errors.extend(doc.errors)


def fail(server_id: int, source: str, key: str, reason: str, result: BatchResult) -> None:
    """Record a document that could not be used (it is retried next time) and go on."""
    with session_scope() as session:
        record_document(session, server_id, source, key, content_hash=None, release_date=None,
                        status="failed", message=reason)
    result.failed += 1
    result.errors.append(reason)


def summary(results: list[dict[str, Any]]) -> tuple[str, str]:
    """The sync's status and one-line message from its batches' results."""
    stored = sum(r["stored"] for r in results)
    skipped = sum(r["skipped"] for r in results)
    failed = sum(r["failed"] for r in results)
    patches = sum(r["patches"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    text = f"{stored} documents stored ({patches} patches), {skipped} unchanged"
    if any(r["stopped"] for r in results):
        return SyncStatus.STOPPED, "stopped by request; " + text
    if failed:
        return SyncStatus.FAILED, f"{failed} documents failed ({errors[0]}); {text}"
    return SyncStatus.SUCCESSFUL, text


def prefetch_content(server_id: int) -> dict[str, Any]:
    """Download every installer the server offers that is not stored yet (`sync --prefetch`),
    20 files between two looks at the stop flag."""
    shas = missing_content(server_id)
    stopped = False
    fetched, errors = 0, []
    for start in range(0, len(shas), 20):
        try:
            progress(server_id, f"prefetching content {start + 1}/{len(shas)}")
        except SyncStopped:
            stopped = True
            break
        done, failed = prefetch(server_id, shas[start : start + 20])
        fetched += done
        errors.extend(failed)
    return {"fetched": fetched, "failed": len(errors), "errors": errors[:5], "stopped": stopped}


def with_prefetch(status: str, message: str, outcome: dict[str, Any]) -> tuple[str, str]:
    """The sync's status and message once the prefetch outcome is added."""
    message += f"; {outcome['fetched']} content files prefetched"
    if outcome["stopped"]:
        return SyncStatus.STOPPED, "stopped by request; " + message
    if outcome["failed"]:
        message += f", {outcome['failed']} failed ({outcome['errors'][0]})"
        return SyncStatus.FAILED, message
    return status, message
