"""Microsoft's offline catalog (`--upstream microsoft --msrc-source path/to/wsusscn2.cab` or
its extracted folder).

The catalog is read whole before anything is stored, so a damaged cabinet (a fragment missing,
malformed XML) fails with one line and stores nothing. The records are then stored in up to 16
documents, each in its own transaction with the stop flag checked between them; a catalog
identical to the last one synced (same bytes) is not even extracted.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from models import PatchServer
from models.db import session_scope
from patchflow import config
from patchflow.catalog import syncing
from patchflow.catalog.catalog_store import record_document
from patchflow.upstreams.base import ConnectorBase, Log
from patchflow.upstreams.msrc import uses_offline_catalog
from sources import wsusscn2
from sources.records import SourceError

SOURCE = "wsusscn2"
CATALOG_KEY = "catalog"


class Wsusscn2Connector(ConnectorBase):
    kind = SOURCE
    label = "wsusscn2"
    task_name = "sync-wsusscn2"

    def selected(self, server: PatchServer) -> bool:
        return server.upstream == "microsoft" and uses_offline_catalog(server.msrc_source)

    def sync_batch(self, server_id: int, refs: list[dict[str, Any]] | None, done_before: int,
                   total: int, log: Log) -> dict[str, Any]:
        result = syncing.BatchResult()
        with session_scope() as session:
            server = syncing.server_row(session, server_id)
            source = Path(server.msrc_source or "")
            filters = syncing.filters_of(server)
        try:
            syncing.progress(server_id, f"wsusscn2: checking {source.name}")
            digest = wsusscn2.catalog_hash(source)
            if syncing.unchanged(server_id, SOURCE, CATALOG_KEY, digest):
                result.skipped += 1
                return asdict(result)
            syncing.progress(server_id, f"wsusscn2: opening {source.name}")
            with wsusscn2.open_catalog(source, config.home() / "tmp") as layout:
                records = wsusscn2.read_catalog(layout,
                                                lambda m: syncing.progress(server_id, m))
        except syncing.SyncStopped:
            result.stopped = True
            return asdict(result)
        except SourceError as exc:
            log.warning("wsusscn2 failed: %s", exc)
            syncing.fail(server_id, SOURCE, CATALOG_KEY, str(exc), result)
            return asdict(result)
        except OSError as exc:
            reason = f"wsusscn2: cannot read {source}: {exc.strerror or exc}"
            log.warning(reason)
            syncing.fail(server_id, SOURCE, CATALOG_KEY, reason, result)
            return asdict(result)
        docs = wsusscn2.documents(records)
        for n, doc in enumerate(docs, 1):
            try:
                syncing.progress(server_id, f"wsusscn2: storing part {n}/{len(docs)}")
            except syncing.SyncStopped:
                result.stopped = True
                return asdict(result)
            syncing.store(server_id, SOURCE, doc, filters, result)
        with session_scope() as session:
            record_document(session, server_id, SOURCE, CATALOG_KEY, content_hash=digest,
                            release_date=None, status="ok", message=None, patches=len(records))
        log.info("wsusscn2 %s: %d patches in %d parts", source.name, len(records), len(docs))
        return asdict(result)


CONNECTOR = Wsusscn2Connector()
