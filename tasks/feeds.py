"""Vulnerability feed tasks: read a feed's documents (online or offline), parse, store.

Every task opens its own database session. Documents are read and parsed in batches; a
document that fails (unreadable, truncated, hostile) is counted with a one-line reason and the
batch goes on, and what it stored last time stays (patchflow.vulnfeeds). Sources:
- KEV: a URL or a file (JSON, or .json.gz).
- Mozilla: a URL or file of the foundation-security-advisories archive (.tar.gz), a folder of
  mfsa*.yml files (the repository's announce/ folder, or any copy), or one .yml file.
- NVD: the CVE API 2.0 URL (online: one query per mapped CPE, paged with startIndex, after the
  first full run only what changed since, with lastModStartDate; the API key comes from the
  NVD_API_KEY environment variable and is never stored), a folder of CVE record files, or one
  file (a record or a saved API response page).
"""

from __future__ import annotations

import datetime as dt
import os
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from prefect import get_run_logger, task

from models.base import utcnow
from models.db import session_scope
from models.enums import SyncStatus
from patchflow import vulnfeeds
from patchflow.http import describe_error, make_session
from sources import kev, mozilla, nvd
from sources.records import SourceError, load_json, one_line
from sources.vulnrecords import AffectedRange, VulnFacts
from tasks.retry import io_retries

BATCH = 50
# NVD allows 120 days between lastModStartDate and lastModEndDate; older marks mean a full run.
NVD_MAX_WINDOW = dt.timedelta(days=120)
_MAX_MEMBER = 4 * 1024 * 1024


@dataclass
class FeedResult:
    status: str = SyncStatus.SUCCESSFUL
    message: str = ""
    records: int | None = None  # rows the feed now has stored; None keeps the last count
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    last_modified: dt.datetime | None = None


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def _download(url: str, timeout: float = 120.0) -> bytes:
    try:
        response = make_session().get(url, timeout=(10, timeout))
        response.raise_for_status()
    except requests.RequestException as exc:
        raise SourceError(f"{url}: {describe_error(exc)}") from None
    return response.content


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None


@task(name="feed-begin", **io_retries(
    "Mark the feed Running (database)."))
def begin(name: str, flow_run_id: str | None, only_with_source: bool = False) -> dict[str, Any]:
    """Mark the feed Running; a feed turned off is left alone when `only_with_source`."""
    with session_scope() as session:
        if only_with_source and not vulnfeeds.get_feed(session, name).source:
            return {"source": None, "last_modified": None, "skipped": True}
        row = vulnfeeds.begin(session, name, flow_run_id)
        return {"source": row.source, "last_modified": row.last_modified, "skipped": False}


@task(name="feeds-stale", **io_retries(
    "Which feeds are due before a cycle's scan (database)."))
def stale_feeds() -> dict[str, Any]:
    """{"names": feeds due before a cycle's scan, "reason": one line} (vulnfeeds.stale)."""
    from patchflow import config

    hours = float(config.number("feeds", "max_age_hours", 24, 1, 24 * 366))
    with session_scope() as session:
        names = vulnfeeds.stale(session, dt.timedelta(hours=hours))
    if names:
        return {"names": names, "reason": f"feeds {', '.join(names)}: no successful sync "
                                          f"within {hours:g} h"}
    return {"names": [], "reason": f"feeds in use synced within {hours:g} h"}


@task(name="feed-finish", **io_retries(
    "Record the feed's outcome (database)."))
def finish(name: str, result: FeedResult) -> None:
    with session_scope() as session:
        vulnfeeds.finish(session, name, result.status, result.message, result.records,
                         result.last_modified)


# --------------------------------------------------------------------------------------------
# KEV


@task(name="feed-kev", **io_retries(
    "Fetch and store CISA's KEV catalog (HTTP or file, database)."))
def sync_kev(source: str) -> FeedResult:
    try:
        raw = _download(source) if is_url(source) else _read(source)
        catalog = kev.parse_kev(raw, Path(source).name if not is_url(source) else "KEV catalog")
    except SourceError as exc:
        return FeedResult(status=SyncStatus.FAILED, message=str(exc))
    with session_scope() as session:
        count = vulnfeeds.replace_kev(session, catalog.entries)
    message = f"{count} KEV entries (catalog {catalog.version or 'unknown'})"
    if catalog.errors:
        message += f"; {catalog.errors[0]}"
    return FeedResult(message=message, records=count, errors=catalog.errors)


# --------------------------------------------------------------------------------------------
# Mozilla


@task(name="feed-mozilla-plan", **io_retries(
    "List Mozilla's advisories (HTTP or folder/archive)."))
def plan_mozilla(source: str, workdir: str) -> tuple[list[str], str | None]:
    """Locations of the advisories, or the one-line reason there are none (returned, not
    raised, so the run log has that line instead of a traceback)."""
    try:
        return _plan_mozilla(source, workdir), None
    except SourceError as exc:
        return [], str(exc)


def _plan_mozilla(source: str, workdir: str) -> list[str]:
    """File paths, or "ARCHIVE!MEMBER" inside a .tar.gz (an online archive is saved into
    `workdir` first)."""
    if is_url(source):
        raw = _download(source)
        if source.lower().endswith((".yml", ".yaml")):
            target = Path(workdir) / Path(source.split("?")[0]).name
        else:
            target = Path(workdir) / "mozilla-advisories.tar.gz"
        target.write_bytes(raw)
        source = str(target)
    path = Path(source)
    if path.is_dir():
        return [str(p) for p in mozilla.advisory_files(path)]
    if path.name.lower().endswith((".yml", ".yaml")):
        return [str(path)]
    try:
        with tarfile.open(path, "r:*") as archive:
            members = [m.name for m in archive.getmembers()
                       if m.isfile() and mozilla.is_advisory_name(m.name.rsplit("/", 1)[-1])]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise SourceError(f"{path.name}: not a readable advisories archive: {one_line(exc)}") \
            from None
    return [f"{path}!{m}" for m in sorted(members, key=lambda m: m.rsplit("/", 1)[-1])]


def _mozilla_raw(location: str, archives: dict[str, tarfile.TarFile]) -> tuple[str, bytes]:
    if "!" in location and not Path(location).exists():
        archive_path, member = location.split("!", 1)
        archive = archives.get(archive_path)
        if archive is None:
            # closed by parse_mozilla_batch, which keeps one handle per archive for the batch
            archive = archives[archive_path] = tarfile.open(archive_path, "r:*")  # noqa: SIM115
        info = archive.getmember(member)
        if info.size > _MAX_MEMBER:
            raise SourceError(f"{member}: larger than {_MAX_MEMBER} bytes")
        handle = archive.extractfile(info)
        raw = handle.read() if handle else b""
        name = member.rsplit("/", 1)[-1]
    else:
        raw, name = _read(location), Path(location).name
    return name.rsplit(".", 1)[0], raw


@task(name="feed-mozilla-batch", **io_retries(
    "Read and parse a batch of Mozilla advisories (files)."))
def parse_mozilla_batch(
    locations: list[str],
) -> tuple[dict[str, tuple[list[VulnFacts], list[AffectedRange]]], list[str]]:
    """Parsed advisories by key, and one line per advisory that failed."""
    docs: dict[str, tuple[list[VulnFacts], list[AffectedRange]]] = {}
    errors: list[str] = []
    archives: dict[str, tarfile.TarFile] = {}
    try:
        for location in locations:
            try:
                key, raw = _mozilla_raw(location, archives)
                advisory = mozilla.parse_advisory(raw, key)
            except SourceError as exc:
                errors.append(str(exc))
                continue
            except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
                errors.append(f"{location.rsplit('/', 1)[-1]}: {one_line(exc)}")
                continue
            docs[advisory.key] = (advisory.facts, advisory.ranges)
    finally:
        for archive in archives.values():
            archive.close()
    return docs, errors


@task(name="feed-mozilla-store", **io_retries(
    "Store the parsed Mozilla advisories (database)."))
def store_mozilla(
    docs: dict[str, tuple[list[VulnFacts], list[AffectedRange]]], failed: int
) -> int:
    with session_scope() as session:
        vulnfeeds.store_documents(session, "mozilla", docs, keep_higher_ratings=failed > 0)
        session.flush()
        return vulnfeeds.count_source(session, "mozilla")


# --------------------------------------------------------------------------------------------
# NVD


@task(name="feed-nvd-plan", **io_retries(
    "List the offline NVD record files (folder)."))
def plan_nvd_files(source: str) -> list[str]:
    path = Path(source)
    if path.is_dir():
        return [str(p) for p in nvd.record_files(path)]
    return [str(path)]


@task(name="feed-nvd-batch", **io_retries(
    "Parse and store a batch of NVD record files (files, database)."))
def sync_nvd_files(locations: list[str]) -> FeedResult:
    """Parse and store a batch of record files; each CVE replaces only its own NVD rows."""
    result = FeedResult()
    docs: dict[str, tuple[list[VulnFacts], list[AffectedRange]]] = {}
    for location in locations:
        try:
            for record in nvd.parse_file(_read(location), Path(location).name):
                docs[record.cve] = ([record.facts], record.ranges)
        except SourceError as exc:
            result.failed += 1
            result.errors.append(str(exc))
    with session_scope() as session:
        vulnfeeds.store_documents(session, "nvd", docs, keep_higher_ratings=False)
        session.flush()
        result.records = vulnfeeds.count_source(session, "nvd")
    result.message = f"{len(docs)} CVE records read"
    return result


@task(name="feed-link-patches", **io_retries(
    "Link third-party patches to the CVEs they fix (database)."))
def link_patches() -> int:
    """Third-party patches and the CVEs each fixes, after the feeds changed."""
    from patchflow.vuln_query import relink_patches

    with session_scope() as session:
        return relink_patches(session)


def nvd_delay(api_key: str | None) -> float:
    """Seconds between NVD requests: NVD's published rate limits, unless a mirror operator (or
    a test) sets PATCHFLOW_NVD_DELAY."""
    override = os.environ.get("PATCHFLOW_NVD_DELAY")
    if override:
        try:
            return max(0.0, float(override))
        except ValueError:
            pass
    return nvd.DELAY_WITH_KEY if api_key else nvd.DELAY_WITHOUT_KEY


@task(name="feed-nvd-online", **io_retries(
    "Fetch NVD records per mapped CPE, paged (HTTP, database)."))
def sync_nvd_online(url: str, last_modified: dt.datetime | None) -> FeedResult:
    """One query per mapped CPE (virtualMatchString), paged with startIndex; incremental with
    lastModStartDate when the last full success is recent enough. Pages are stored one
    transaction each, so a failure midway keeps what was fetched."""
    logger = get_run_logger()
    api_key = os.environ.get("NVD_API_KEY") or None
    delay = nvd_delay(api_key)
    started = utcnow()
    window = None
    if last_modified is not None and started - last_modified < NVD_MAX_WINDOW:
        window = (last_modified, started)
    with session_scope() as session:
        cpes = sorted(set(vulnfeeds.cpe_for(session).values()))
    session_http = make_session()
    result = FeedResult(last_modified=started)
    fetched = 0
    first = True
    for cpe in cpes:
        start = 0
        while True:
            if not first:
                time.sleep(delay)
            first = False
            try:
                raw = nvd.fetch_page(session_http, url, start, api_key, window,
                                     match=f"cpe:2.3:a:{cpe}")
                body = load_json(raw, f"NVD page {cpe}@{start}")
                records, total = nvd.parse_page(body, f"NVD page {cpe}@{start}")
            except requests.RequestException as exc:
                return _nvd_failed(result, f"NVD {cpe}: {describe_error(exc)}")
            except SourceError as exc:
                return _nvd_failed(result, str(exc))
            with session_scope() as session:
                vulnfeeds.store_documents(
                    session, "nvd", {r.cve: ([r.facts], r.ranges) for r in records},
                    keep_higher_ratings=False)
                session.flush()
                result.records = vulnfeeds.count_source(session, "nvd")
            fetched += len(records)
            page = body.get("resultsPerPage") if isinstance(body, dict) else None
            step = page if isinstance(page, int) and page > 0 else len(records)
            start += step
            if step <= 0 or start >= total:
                break
        logger.info("NVD %s: done", cpe)
    kind = "changes since " + window[0].isoformat(timespec="seconds") if window else "full"
    result.message = f"{fetched} CVE records fetched ({kind}, {len(cpes)} CPEs)"
    return result


def _nvd_failed(result: FeedResult, message: str) -> FeedResult:
    result.status, result.message, result.last_modified = SyncStatus.FAILED, message, None
    return result


def workdir() -> str:
    return tempfile.mkdtemp(prefix="patchflow-feeds-")
