"""NVD's CVE API 2.0 for every third-party package mapped to a CPE (feeds cpe), or its records
offline: a folder of CVE record files, or one file (a record or a saved API response page).

Online, one query per mapped CPE (virtualMatchString), paged with startIndex, within NVD's
published rate limits (the API key comes from the NVD_API_KEY environment variable and is never
stored; a 403, NVD's answer when the limit is hit, is waited out and retried). After a full
success, runs ask only for what changed since (lastModStartDate), while that is within NVD's
120-day window. Each page, and each batch of files, is stored in its own transaction, and each
CVE replaces only its own NVD rows, so a failure midway keeps what was read.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

import requests

from models.base import utcnow
from models.db import session_scope
from models.enums import SyncStatus
from patchflow.catalog import vulnfeeds
from patchflow.http import describe_error
from patchflow.upstreams.feed import (
    FeedBase,
    FeedBatch,
    FeedResult,
    Log,
    Plan,
    failed,
    feed_http,
    is_url,
    outcome,
    read,
)
from sources import nvd
from sources.records import SourceError, load_json

# NVD allows 120 days between lastModStartDate and lastModEndDate; older marks mean a full run.
MAX_WINDOW = dt.timedelta(days=120)
# NVD counts requests in a rolling 30-second window; a 403 means that window is full.
RATE_LIMIT_WAIT = 30.0
RATE_LIMIT_RETRIES = 3


def window(last_modified: dt.datetime | None, now: dt.datetime) -> tuple[dt.datetime, ...]:
    """(start, end) of an incremental query, or () for a full one."""
    if last_modified is not None and now - last_modified < MAX_WINDOW:
        return (last_modified, now)
    return ()


def delay(api_key: str | None) -> float:
    """Seconds between requests: NVD's published rate limits, unless a mirror operator (or a
    test) sets PATCHFLOW_NVD_DELAY, which then also replaces the wait after a 403."""
    override = os.environ.get("PATCHFLOW_NVD_DELAY")
    if override:
        try:
            return max(0.0, float(override))
        except ValueError:
            pass
    return nvd.DELAY_WITH_KEY if api_key else nvd.DELAY_WITHOUT_KEY


def rate_limit_wait(response: requests.Response | None, api_key: str | None, attempt: int) -> float:
    """How long to wait after a 403: the server's Retry-After, else NVD's window, growing."""
    if os.environ.get("PATCHFLOW_NVD_DELAY"):
        return delay(api_key)
    retry_after = response.headers.get("Retry-After", "") if response is not None else ""
    if retry_after.isdigit():
        return min(float(retry_after), 300.0)
    return RATE_LIMIT_WAIT * (attempt + 1)


def fetch_page(http: requests.Session, url: str, start: int, api_key: str | None,
               span: tuple[dt.datetime, ...], cpe: str, log: Log) -> bytes:
    """One page, with 403s (rate limit) waited out up to RATE_LIMIT_RETRIES times."""
    attempt = 0
    while True:
        try:
            return nvd.fetch_page(http, url, start, api_key, span or None,  # type: ignore[arg-type]
                                  match=f"cpe:2.3:a:{cpe}")
        except requests.HTTPError as exc:
            response = exc.response
            if response is None or response.status_code != 403 or attempt == RATE_LIMIT_RETRIES:
                raise
            wait = rate_limit_wait(response, api_key, attempt)
            log.warning("NVD answered 403 (rate limit) for %s: retrying in %.0f s", cpe, wait)
            time.sleep(wait)
            attempt += 1


class NvdConnector(FeedBase):
    kind = "nvd"
    label = "NVD"
    default_source = nvd.DEFAULT_URL
    batch_size = 50  # record files per task run offline
    online_batch = 5  # CPEs per task run online (each one or more pages)

    def plan(self, source: str, last_modified: dt.datetime | None, workdir: str) -> Plan:
        if is_url(source):
            started = utcnow()
            span = window(last_modified, started)
            with session_scope() as session:
                cpes = sorted(set(vulnfeeds.cpe_for(session).values()))
            common = {"started": started.isoformat(),
                      "since": span[0].isoformat() if span else None}
            return Plan(refs=[{"cpe": cpe, "index": i, **common} for i, cpe in enumerate(cpes)])
        path = Path(source)
        files = nvd.record_files(path) if path.is_dir() else [path]
        return Plan(refs=[{"location": str(p)} for p in files])

    def batches(self, source: str, plan: Plan) -> list[list[dict[str, Any]]]:
        size = self.online_batch if is_url(source) else self.batch_size
        return [plan.refs[i:i + size] for i in range(0, len(plan.refs), size)]

    def sync_batch(self, source: str, refs: list[dict[str, Any]], log: Log) -> FeedBatch:
        if is_url(source):
            return self._sync_online(source, refs, log)
        batch = FeedBatch()
        docs: dict[str, Any] = {}
        for ref in refs:
            location = ref["location"]
            try:
                for record in nvd.parse_file(read(location), Path(location).name):
                    docs[record.cve] = ([record.facts], record.ranges)
                batch.read += 1
            except SourceError as exc:
                batch.errors.append(str(exc))
        batch.records = self._store(docs)
        return batch

    def _sync_online(self, url: str, refs: list[dict[str, Any]], log: Log) -> FeedBatch:
        api_key = os.environ.get("NVD_API_KEY") or None
        pause = delay(api_key)
        batch = FeedBatch()
        http = feed_http()
        for ref in refs:
            cpe = ref["cpe"]
            span: tuple[dt.datetime, ...] = ()
            if ref["since"]:
                span = (dt.datetime.fromisoformat(ref["since"]),
                        dt.datetime.fromisoformat(ref["started"]))
            start = 0
            while True:
                if ref["index"] or start:
                    time.sleep(pause)
                label = f"NVD page {cpe}@{start}"
                try:
                    body = load_json(fetch_page(http, url, start, api_key, span, cpe, log), label)
                    records, total = nvd.parse_page(body, label)
                except requests.RequestException as exc:
                    batch.fatal = f"NVD {cpe}: {describe_error(exc)}"
                    if isinstance(exc, requests.HTTPError) and exc.response is not None \
                            and exc.response.status_code == 403:
                        batch.fatal += " (rate limit still exceeded, or NVD_API_KEY refused)"
                    return batch
                except SourceError as exc:
                    batch.fatal = str(exc)
                    return batch
                batch.records = self._store({r.cve: ([r.facts], r.ranges) for r in records})
                batch.read += len(records)
                page = body.get("resultsPerPage") if isinstance(body, dict) else None
                step = page if isinstance(page, int) and page > 0 else len(records)
                start += step
                if step <= 0 or start >= total:
                    break
            log.info("NVD %s: done", cpe)
        return batch

    def _store(self, docs: dict[str, Any]) -> int:
        with session_scope() as session:
            return vulnfeeds.store_and_count(session, self.kind, docs, keep_higher_ratings=False)

    def summarise(self, source: str, plan: Plan, batches: list[FeedBatch]) -> FeedResult:
        read_count = sum(b.read for b in batches)
        records = next((b.records for b in reversed(batches) if b.records is not None), None)
        if is_url(source):
            fatal = next((b.fatal for b in batches if b.fatal), None)
            if fatal:
                return FeedResult(status=SyncStatus.FAILED, message=fatal, records=records)
            if not plan.refs:
                return failed("no package is mapped to a CPE (feeds cpe set)")
            first = plan.refs[0]
            kind = f"changes since {first['since'][:19]}" if first["since"] else "full"
            return FeedResult(message=f"{read_count} CVE records fetched ({kind}, "
                                      f"{len(plan.refs)} CPEs)", records=records,
                              last_modified=dt.datetime.fromisoformat(first["started"]))
        errors = [e for b in batches for e in b.errors]
        if not read_count and errors:
            return failed(f"no record could be read ({errors[0]})")
        return outcome(f"{read_count} CVE record files read", records, errors)


CONNECTOR = NvdConnector()
