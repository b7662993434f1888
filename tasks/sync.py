"""Sync tasks: plan the documents an upstream offers, then fetch, parse and store them in batches.

Each document is fetched, parsed and stored in its own transaction, so an interrupted sync
leaves the catalog consistent and a rerun resumes (unchanged documents are skipped by hash, or
for the online MSRC feed by release date before downloading). A document that fails is recorded
with a one-line reason and the batch goes on. The stop flag on the patch server is checked
between documents.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
from prefect import get_run_logger, task
from sqlalchemy import select

from models import PatchServer, SyncDocument
from models.base import utcnow
from models.db import session_scope
from models.enums import SyncStatus
from patchflow import faults, vulnfeeds
from patchflow import servers as server_svc
from patchflow.catalog_store import document_unchanged, record_document, store_document
from patchflow.http import describe_error, make_session
from sources import msrc, winget
from sources.filters import Filters
from sources.records import ParsedDocument, SourceError
from tasks.retry import io_retries

MSRC_BATCH = 24
_MSRC_SUFFIXES = (".xml.gz", ".json.gz", ".json", ".xml")


@dataclass
class DocRef:
    """Where to get one document: a file of an offline mirror or a URL, plus what we know."""

    key: str
    location: str
    release_date: str | None = None


@dataclass
class BatchResult:
    stored: int = 0  # documents stored
    skipped: int = 0  # unchanged
    failed: int = 0
    patches: int = 0
    errors: list[str] = field(default_factory=list)
    stopped: bool = False


class SyncStopped(Exception):
    """The administrator asked this sync to stop."""


def _server(session: Any, server_id: int) -> PatchServer:
    server = session.get(PatchServer, server_id)
    if server is None:
        raise SourceError(f"patch server #{server_id} was deleted during the sync")
    return server


def _filters(server: PatchServer) -> Filters:
    f = server_svc.filters_of(server)
    return Filters.from_lists(f["categories"], f["languages"], f["products"])


def _http(server: PatchServer) -> requests.Session:
    return make_session(proxies=server_svc.proxies_of(server))


def _progress(server_id: int, message: str) -> None:
    with session_scope() as session:
        server = _server(session, server_id)
        server.sync_message = message
        if server.sync_stop_requested:
            raise SyncStopped()


@task(name="begin-sync", **io_retries(
    "Mark the patch server syncing (database)."))
def begin_sync(server_name: str, flow_run_id: str | None) -> int:
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


@task(name="finish-sync", **io_retries(
    "Record the sync's outcome on the patch server (database)."))
def finish_sync(server_id: int, status: str, message: str) -> None:
    with session_scope() as session:
        server = _server(session, server_id)
        now = utcnow()
        server.sync_status = status
        server.sync_status_at = now
        server.sync_finished_at = now
        server.sync_message = message[:2000]
        server.sync_stop_requested = False


@task(name="plan-msrc", **io_retries(
    "List the MSRC documents to check (HTTP or a mirror folder)."))
def plan_msrc(server_id: int) -> dict[str, Any]:
    """{"refs": documents to look at, oldest first, "error": one line or None}.

    Online, months whose release date has not changed since the last sync are left out. An
    unreachable source is an outcome, not a crash: it is returned, not raised, so the run log
    carries one line instead of a traceback.
    """
    try:
        return {"refs": _plan_msrc(server_id), "error": None}
    except SourceError as exc:
        return {"refs": [], "error": str(exc)}


def _plan_msrc(server_id: int) -> list[dict[str, Any]]:
    with session_scope() as session:
        server = _server(session, server_id)
        source = server.msrc_source or server_svc.DEFAULT_MSRC_SOURCE
        proxies = server_svc.proxies_of(server)
        known = {
            row.doc_key: row.release_date
            for row in session.scalars(
                select(SyncDocument).filter_by(server_id=server_id, source="msrc", status="ok")
            )
        }
    if not source.startswith(("http://", "https://")):
        folder = Path(source)
        if not folder.is_dir():
            raise SourceError(f"MSRC source folder {folder} does not exist")
        refs = []
        for file in sorted(folder.iterdir(), key=lambda p: p.name):
            suffix = next((s for s in _MSRC_SUFFIXES if file.name.endswith(s)), None)
            if suffix and file.is_file() and file.name[:1].isdigit():
                refs.append(DocRef(file.name[: -len(suffix)], str(file)))
        return [asdict(r) for r in refs]
    base = source if source.endswith("/") else source + "/"
    http = make_session(proxies=proxies)
    try:
        entries = msrc.parse_updates_index(msrc.fetch_updates_index(http, base))
    except requests.RequestException as exc:
        raise SourceError(f"MSRC index {base}updates: {describe_error(exc)}") from None
    refs = []
    for entry in sorted(entries, key=lambda e: (e["CurrentReleaseDate"] or e["ID"], e["ID"])):
        released = entry["CurrentReleaseDate"]
        if released is not None and known.get(entry["ID"]) == released:
            continue  # unchanged since the last sync: not even downloaded
        url = entry["CvrfUrl"] or f"{base}cvrf/{entry['ID']}"
        refs.append(DocRef(entry["ID"], url, released.isoformat() if released else None))
    return [asdict(r) for r in refs]


def _read_msrc(ref: DocRef, http: requests.Session) -> bytes:
    if ref.location.startswith(("http://", "https://")):
        try:
            response = http.get(ref.location, headers={"Accept": "application/json"},
                                timeout=(10, 120))
            response.raise_for_status()
        except requests.RequestException as exc:
            raise SourceError(f"{ref.key}: {describe_error(exc)}") from None
        return response.content
    try:
        return Path(ref.location).read_bytes()
    except OSError as exc:
        raise SourceError(f"{ref.key}: cannot read {ref.location}: {exc.strerror}") from None


def _store(
    server_id: int, source: str, doc: ParsedDocument, filters: Filters, result: BatchResult
) -> None:
    with session_scope() as session:
        if document_unchanged(session, server_id, source, doc.key, doc.content_hash):
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


def _fail(server_id: int, source: str, key: str, reason: str, result: BatchResult) -> None:
    with session_scope() as session:
        record_document(session, server_id, source, key, content_hash=None, release_date=None,
                        status="failed", message=reason)
    result.failed += 1
    result.errors.append(reason)


@task(name="sync-msrc-batch", **io_retries(
    "Fetch and store a batch of MSRC documents (HTTP, database); a document that fails "
    "alone is recorded, not retried."))
def sync_msrc_batch(server_id: int, refs: list[dict[str, Any]], done_before: int,
                    total: int) -> dict[str, Any]:
    logger = get_run_logger()
    result = BatchResult()
    with session_scope() as session:
        server = _server(session, server_id)
        filters, http = _filters(server), _http(server)
    for n, raw_ref in enumerate(refs, done_before + 1):
        ref = DocRef(**raw_ref)
        try:
            _progress(server_id, f"MSRC document {n}/{total}: {ref.key}")
        except SyncStopped:
            result.stopped = True
            break
        try:
            raw = _read_msrc(ref, http)
            with session_scope() as session:
                unchanged = document_unchanged(session, server_id, "msrc", ref.key,
                                               msrc.content_hash(raw, ref.key))
            if unchanged:
                result.skipped += 1
                continue
            doc, scores = msrc.parse_cvrf_month(raw, key=ref.key)
        except SourceError as exc:
            logger.warning("MSRC %s failed: %s", ref.key, exc)
            _fail(server_id, "msrc", ref.key, str(exc), result)
            continue
        _store(server_id, "msrc", doc, filters, result)
        _store_msrc_vulnerabilities(scores)
        logger.info("MSRC %s: %d patches", ref.key, len(doc.patches))
    return asdict(result)


def _store_msrc_vulnerabilities(scores: list[msrc.MsrcCveScores]) -> None:
    """CVSS v3 and exploitation status of the document's CVEs, for the vulnerability views."""
    with session_scope() as session:
        vulnfeeds.store_documents(session, "msrc", {s.facts.cve: ([s.facts], []) for s in scores
                                                    if len(s.facts.cve) <= 32},
                                  keep_higher_ratings=False)


@task(name="sync-winget-batch", **io_retries(
    "Fetch and store the third-party packages (HTTP, database)."))
def sync_winget_batch(server_id: int) -> dict[str, Any]:
    """All configured third-party packages; one package (all its versions) per transaction."""
    logger = get_run_logger()
    result = BatchResult()
    with session_scope() as session:
        server = _server(session, server_id)
        source = server.winget_source or server_svc.DEFAULT_WINGET_SOURCE
        packages = json.loads(server.winget_packages or "[]")
        filters, http = _filters(server), _http(server)
    if source == "none" or not packages:
        return asdict(result)
    online = source.startswith(("http://", "https://"))
    folders: dict[str, Path] = {}
    if not online:
        if not Path(source).is_dir():
            _fail(server_id, "winget", "*", f"winget source folder {source} does not exist",
                  result)
            return asdict(result)
        folders = winget.find_package_dirs(Path(source), packages)
    for n, package_id in enumerate(packages, 1):
        try:
            _progress(server_id, f"winget package {n}/{len(packages)}: {package_id}")
        except SyncStopped:
            result.stopped = True
            break
        try:
            if online:
                doc = _fetch_winget_online(http, source, package_id)
            elif package_id in folders:
                doc = winget.parse_package_dir(folders[package_id])
            else:
                raise SourceError(f"{package_id}: not found in {source}")
        except SourceError as exc:
            logger.warning("winget %s failed: %s", package_id, exc)
            _fail(server_id, "winget", package_id, str(exc), result)
            continue
        _store(server_id, "winget", doc, filters, result)
        logger.info("winget %s: %d versions", package_id, len(doc.patches))
    return asdict(result)


def _fetch_winget_online(http: requests.Session, source: str, package_id: str) -> ParsedDocument:
    try:
        from sources import winget_online
    except ImportError:
        raise SourceError(
            f"{package_id}: online winget source not available in this build; "
            "use --winget-source with a winget-pkgs mirror folder"
        ) from None
    return winget_online.fetch_package(http, source, package_id)
