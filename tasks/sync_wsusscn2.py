"""Sync task for Microsoft's offline catalog (`--msrc-source path/to/wsusscn2.cab` or its
extracted folder).

The catalog is read whole before anything is stored, so a damaged cabinet (a fragment missing,
malformed XML) fails with one line and stores nothing. The records are then stored in up to 16
documents, each in its own transaction with the stop flag checked between them; a catalog
identical to the last one synced (same bytes) is not even extracted.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from models.db import session_scope
from patchflow import config
from patchflow.catalog_store import document_unchanged, record_document
from sources import wsusscn2
from sources.records import SourceError
from tasks.retry import io_retries
from tasks.sync import BatchResult, SyncStopped, _fail, _filters, _progress, _server, _store

SOURCE = "wsusscn2"
CATALOG_KEY = "catalog"


def uses_offline_catalog(msrc_source: str | None) -> bool:
    """Whether an MSRC source setting names a wsusscn2 catalog rather than the CVRF feed."""
    if not msrc_source or msrc_source.startswith(("http://", "https://")):
        return False
    try:
        return wsusscn2.is_catalog(Path(msrc_source))
    except OSError:
        return False


@task(name="sync-wsusscn2", **io_retries(
    "Sync from the offline wsusscn2 catalog (database)."))
def sync_wsusscn2(server_id: int) -> dict[str, Any]:
    logger = get_run_logger()
    result = BatchResult()
    with session_scope() as session:
        server = _server(session, server_id)
        source = Path(server.msrc_source or "")
        filters = _filters(server)
    try:
        _progress(server_id, f"wsusscn2: checking {source.name}")
        digest = wsusscn2.catalog_hash(source)
        with session_scope() as session:
            if document_unchanged(session, server_id, SOURCE, CATALOG_KEY, digest):
                result.skipped += 1
                return asdict(result)
        _progress(server_id, f"wsusscn2: opening {source.name}")
        with wsusscn2.open_catalog(source, config.home() / "tmp") as layout:
            records = wsusscn2.read_catalog(layout, lambda m: _progress(server_id, m))
    except SyncStopped:
        result.stopped = True
        return asdict(result)
    except SourceError as exc:
        logger.warning("wsusscn2 failed: %s", exc)
        _fail(server_id, SOURCE, CATALOG_KEY, str(exc), result)
        return asdict(result)
    except OSError as exc:
        reason = f"wsusscn2: cannot read {source}: {exc.strerror or exc}"
        logger.warning(reason)
        _fail(server_id, SOURCE, CATALOG_KEY, reason, result)
        return asdict(result)
    docs = wsusscn2.documents(records)
    for n, doc in enumerate(docs, 1):
        try:
            _progress(server_id, f"wsusscn2: storing part {n}/{len(docs)}")
        except SyncStopped:
            result.stopped = True
            return asdict(result)
        _store(server_id, SOURCE, doc, filters, result)
    with session_scope() as session:
        record_document(session, server_id, SOURCE, CATALOG_KEY, content_hash=digest,
                        release_date=None, status="ok", message=None, patches=len(records))
    logger.info("wsusscn2 %s: %d patches in %d parts", source.name, len(records), len(docs))
    return asdict(result)
