"""Vulnerability feeds in the database: their configuration, status, CPE mapping and storage.

Storage rules (so nothing stored is lost to a bad feed):
- KEV is one document: a successful parse replaces every KEV row in one transaction; a failed
  one changes nothing.
- Mozilla advisories and NVD records are many documents: ranges are replaced per document
  (`vulnerability_ranges.document`), so a file that fails keeps what it gave last time. Facts
  are replaced per CVE; a CVE's Mozilla rating is the highest over its advisories, and when a
  document failed in the same run the stored rating is kept if it was higher.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models import CpeMapping, FeedStatus, Vulnerability, VulnerabilityRange
from models.base import utcnow
from models.enums import SyncStatus
from patchflow.errors import UserError
from sources.vulnrecords import VENDOR_RATINGS, AffectedRange, VulnFacts

# winget PackageIdentifier -> CPE vendor:product for sources/winget.py DEFAULT_PACKAGES. The
# Mozilla keys are matched by the Mozilla advisories as well as by NVD; Reader installed from
# winget is the continuous ("DC") track.
DEFAULT_CPE: dict[str, str] = {
    "Adobe.Acrobat.Reader.64-bit": "adobe:acrobat_reader_dc",
    "Adobe.Acrobat.Reader.32-bit": "adobe:acrobat_reader_dc",
    "VideoLAN.VLC": "videolan:vlc_media_player",
    "PuTTY.PuTTY": "putty:putty",
    "Notepad++.Notepad++": "notepad-plus-plus:notepad++",
    "Oracle.JavaRuntimeEnvironment": "oracle:jre",
    "7zip.7zip": "7-zip:7-zip",
    "Mozilla.Firefox": "mozilla:firefox",
    "Mozilla.Firefox.ESR": "mozilla:firefox_esr",
    "Mozilla.Thunderbird": "mozilla:thunderbird",
}
_CPE_PART = r"[a-z0-9][a-z0-9._\-+!~]{0,126}"
_CPE = re.compile(rf"^{_CPE_PART}:{_CPE_PART}$")
_PACKAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+_\-]{0,254}$")


def feed_names() -> tuple[str, ...]:
    """The feeds, in sync order: the connectors patchflow.upstreams registers."""
    from patchflow.upstreams import FEEDS

    return tuple(FEEDS)


def feed_name(name: str) -> str:
    key = (name or "").strip().lower()
    if key not in feed_names():
        raise UserError(f"unknown feed {name!r}: choose from {', '.join(feed_names())}")
    return key


def get_feed(session: Session, name: str) -> FeedStatus:
    """The feed's row, created with its default online source the first time it is needed."""
    name = feed_name(name)
    row = session.get(FeedStatus, name)
    if row is None:
        from patchflow.upstreams import FEEDS

        row = FeedStatus(name=name, source=FEEDS[name].default_source,
                         status=SyncStatus.NEVER, records=0)
        session.add(row)
        session.flush()
    return row


def list_feeds(session: Session) -> list[dict[str, Any]]:
    out = []
    for name in feed_names():
        row = get_feed(session, name)
        out.append({
            "name": name,
            "source": row.source or "none",
            "status": row.status,
            "timestamp": row.status_at.isoformat() if row.status_at else None,
            "records": row.records,
            "message": row.message,
        })
    return out


def normalize_source(source: str) -> str | None:
    """"none" turns the feed off; a URL must be http(s); a path must exist (folder or file)
    and is stored absolute so a sync run from another directory finds it."""
    text = (source or "").strip()
    if text.lower() == "none":
        return None
    if not text or any(ord(c) < 32 for c in text):
        raise UserError("--source must be a URL, a folder, a file or 'none'")
    if re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://", text):
        if not text.lower().startswith(("http://", "https://")):
            raise UserError(f"--source URL must be http:// or https://, not {text.split(':')[0]}")
        if len(text) > 1024:
            raise UserError("--source URL is longer than 1024 characters")
        return text
    path = Path(text).expanduser()
    if not path.exists():
        raise UserError(f"--source {text}: no such file or folder")
    resolved = str(path.resolve())
    if len(resolved) > 1024:
        raise UserError("--source path is longer than 1024 characters")
    return resolved


def set_source(session: Session, name: str, source: str) -> FeedStatus:
    row = get_feed(session, name)
    new = normalize_source(source)
    if new != row.source:
        row.source = new
        row.last_modified = None  # a new source starts with a full fetch
    return row


def begin(session: Session, name: str, flow_run_id: str | None) -> FeedStatus:
    row = get_feed(session, name)
    row.status, row.status_at, row.message = SyncStatus.RUNNING, utcnow(), "starting"
    row.flow_run_id = flow_run_id
    return row


def finish(session: Session, name: str, status: str, message: str,
           records: int | None = None, last_modified: dt.datetime | None = None) -> None:
    row = get_feed(session, name)
    row.status, row.status_at, row.message = status, utcnow(), message[:2000]
    if records is not None:
        row.records = records
    if last_modified is not None:
        row.last_modified = last_modified


def end_run(session: Session, flow_run_id: str, status: str, message: str) -> list[str]:
    """End the feeds that flow run `flow_run_id` left Running (cancelled, interrupted, or its
    process died): the state hooks and the start-up reaper (deployments/) call this, the way
    they end a patch server's sync. Feeds already finished, or run by another flow run, are
    left alone. Returns the feeds ended."""
    rows = session.scalars(select(FeedStatus).where(FeedStatus.flow_run_id == flow_run_id,
                                                    FeedStatus.status == SyncStatus.RUNNING))
    ended = []
    for row in rows:
        row.status, row.status_at, row.message = status, utcnow(), message[:2000]
        ended.append(row.name)
    return ended


def running(session: Session) -> list[FeedStatus]:
    return list(session.scalars(select(FeedStatus).where(FeedStatus.status == SyncStatus.RUNNING)
                                .order_by(FeedStatus.name)))


def stale(session: Session, max_age: dt.timedelta, now: dt.datetime | None = None) -> list[str]:
    """Feeds in use (a source, synced at least once) whose last sync is not a success within
    `max_age`: what a patch cycle refreshes before its scan. A feed never synced is left to
    the administrator (`feeds sync`), so a cycle never starts downloading feeds nobody set up;
    one Running now is left to that run."""
    now = now or utcnow()
    out = []
    for name in feed_names():
        row = get_feed(session, name)
        if not row.source or row.status in (SyncStatus.NEVER, SyncStatus.RUNNING):
            continue
        if (row.status != SyncStatus.SUCCESSFUL or row.status_at is None
                or now - row.status_at >= max_age):
            out.append(name)
    return out


# --------------------------------------------------------------------------------------------
# CPE mapping


def cpe_mappings(session: Session) -> list[dict[str, str]]:
    custom = {m.package_id: m.cpe for m in session.scalars(select(CpeMapping))}
    rows = [{"package_id": p, "cpe": c, "origin": "built-in"} for p, c in DEFAULT_CPE.items()
            if p not in custom]
    rows += [{"package_id": p, "cpe": c, "origin": "custom"} for p, c in custom.items()]
    return sorted(rows, key=lambda r: r["package_id"].lower())


def cpe_for(session: Session) -> dict[str, str]:
    """PackageIdentifier -> vendor:product, custom mappings over the built-in ones."""
    return {r["package_id"]: r["cpe"] for r in cpe_mappings(session)}


def set_cpe(session: Session, package_id: str, cpe: str) -> CpeMapping:
    package_id = (package_id or "").strip()
    if not _PACKAGE_ID.match(package_id):
        raise UserError(f"{package_id!r} is not a winget PackageIdentifier")
    value = (cpe or "").strip().lower()
    if value.startswith("cpe:2.3:a:"):
        value = ":".join(value.split(":")[3:5])
    if not _CPE.match(value):
        raise UserError(f"{cpe!r} is not a CPE VENDOR:PRODUCT (e.g. 7-zip:7-zip)")
    row = session.get(CpeMapping, package_id)
    if row is None:
        row = CpeMapping(package_id=package_id, cpe=value)
        session.add(row)
    else:
        row.cpe, row.updated_at = value, utcnow()
    return row


# --------------------------------------------------------------------------------------------
# Storing feed results


def replace_kev(session: Session, entries: list[VulnFacts]) -> int:
    session.execute(delete(Vulnerability).where(Vulnerability.source == "kev"))
    seen: set[str] = set()
    for facts in entries:
        if facts.cve not in seen:
            seen.add(facts.cve)
            session.add(_row(facts))
    return len(seen)


def store_documents(
    session: Session,
    source: str,
    documents: dict[str, tuple[list[VulnFacts], list[AffectedRange]]],
    keep_higher_ratings: bool,
) -> None:
    """Replace the ranges of each document and the facts of each CVE they name."""
    if not documents:
        return
    keys = list(documents)
    for start in range(0, len(keys), 500):
        session.execute(delete(VulnerabilityRange).where(
            VulnerabilityRange.source == source,
            VulnerabilityRange.document.in_(keys[start:start + 500])))
    merged: dict[str, VulnFacts] = {}
    for key, (facts, ranges) in documents.items():
        for item in facts:
            merged[item.cve] = _merge_same_source(merged.get(item.cve), item)
        for rng in ranges:
            session.add(VulnerabilityRange(document=key[:64], **_range_values(rng)))
    cves = list(merged)
    existing: dict[str, Vulnerability] = {}
    for start in range(0, len(cves), 500):
        for row in session.scalars(select(Vulnerability).where(
                Vulnerability.source == source, Vulnerability.cve.in_(cves[start:start + 500]))):
            existing[row.cve] = row
    for cve, facts in merged.items():
        old = existing.get(cve)
        if old is not None:
            if keep_higher_ratings and _rank(old.vendor_rating) > _rank(facts.vendor_rating):
                facts = VulnFacts(**{**asdict(facts), "vendor_rating": old.vendor_rating})
            session.delete(old)
    session.flush()
    for facts in merged.values():
        session.add(_row(facts))


def store_and_count(
    session: Session,
    source: str,
    documents: dict[str, tuple[list[VulnFacts], list[AffectedRange]]],
    keep_higher_ratings: bool,
) -> int:
    """store_documents, then the feed's CVE count (its `feeds list` records)."""
    store_documents(session, source, documents, keep_higher_ratings)
    session.flush()
    return session.scalar(
        select(func.count()).select_from(Vulnerability).where(Vulnerability.source == source)
    ) or 0


def facts_from_rows(rows: Iterable[Vulnerability]) -> list[VulnFacts]:
    return [VulnFacts(
        cve=r.cve, source=r.source, cvss=r.cvss, vector=r.vector, score_source=r.score_source,
        vendor_rating=r.vendor_rating, exploited=r.exploited,
        publicly_disclosed=r.publicly_disclosed, kev_date_added=r.kev_date_added,
        kev_due_date=r.kev_due_date, kev_ransomware=r.kev_ransomware,
    ) for r in rows]


def range_from_row(r: VulnerabilityRange) -> AffectedRange:
    return AffectedRange(
        cve=r.cve, source=r.source, package=r.package, start_including=r.start_including,
        start_excluding=r.start_excluding, end_excluding=r.end_excluding,
        end_including=r.end_including, exact=r.exact, branch=r.branch, fixed_in=r.fixed_in,
    )


def _row(facts: VulnFacts) -> Vulnerability:
    values = asdict(facts)
    if values["vector"]:
        values["vector"] = values["vector"][:255]
    return Vulnerability(**values)


def _range_values(rng: AffectedRange) -> dict[str, Any]:
    values = asdict(rng)
    for name in ("start_including", "start_excluding", "end_excluding", "end_including",
                 "exact"):
        if values[name]:
            values[name] = values[name][:64]
    values["package"] = values["package"][:255]
    return values


def _rank(rating: str | None) -> int:
    return len(VENDOR_RATINGS) - VENDOR_RATINGS.index(rating) if rating in VENDOR_RATINGS else 0


def _merge_same_source(old: VulnFacts | None, new: VulnFacts) -> VulnFacts:
    """One CVE in two documents of the same feed: the higher rating and score win."""
    if old is None:
        return new
    values = asdict(old)
    if _rank(new.vendor_rating) > _rank(old.vendor_rating):
        values["vendor_rating"] = new.vendor_rating
    if new.cvss is not None and (old.cvss is None or new.cvss > old.cvss):
        values.update(cvss=new.cvss, vector=new.vector, score_source=new.score_source)
    return VulnFacts(**values)
