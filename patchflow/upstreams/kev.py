"""CISA's Known Exploited Vulnerabilities catalog: one document (JSON, or .json.gz), from a URL
or a file. A successful parse replaces every KEV row in one transaction; a failed one changes
nothing (patchflow.catalog.vulnfeeds.replace_kev)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from models.db import session_scope
from patchflow.catalog import vulnfeeds
from patchflow.upstreams.feed import (
    FeedBase,
    FeedBatch,
    FeedResult,
    Log,
    Plan,
    download,
    failed,
    feed_http,
    is_url,
    read,
)
from sources import kev
from sources.records import SourceError


def plan(source: str) -> Plan:
    """The catalog is one document."""
    return Plan(refs=[{"location": source}])


class KevConnector(FeedBase):
    kind = "kev"
    label = "KEV catalog"
    default_source = kev.DEFAULT_URL
    batch_size = 1

    def plan(self, source: str, last_modified: dt.datetime | None, workdir: str) -> Plan:
        return plan(source)

    def sync_batch(self, source: str, refs: list[dict[str, Any]], log: Log) -> FeedBatch:
        try:
            raw = download(feed_http(), source) if is_url(source) else read(source)
            catalog = kev.parse_kev(raw, self.label if is_url(source) else Path(source).name)
        except SourceError as exc:
            return FeedBatch(fatal=str(exc))
        with session_scope() as session:
            count = vulnfeeds.replace_kev(session, catalog.entries)
        detail = f"{count} KEV entries (catalog {catalog.version or 'unknown'})"
        if catalog.errors:
            detail += f"; {catalog.errors[0]}"
        return FeedBatch(read=1, records=count, detail=detail)

    def summarise(self, source: str, plan: Plan, batches: list[FeedBatch]) -> FeedResult:
        batch = batches[0]
        if batch.fatal:
            return failed(batch.fatal)
        return FeedResult(message=batch.detail, records=batch.records)


CONNECTOR = KevConnector()
