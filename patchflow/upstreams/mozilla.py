"""Mozilla's security advisories (foundation-security-advisories, one YAML file per MFSA) for
Firefox, Firefox ESR and Thunderbird: from the repository's archive (.tar.gz, a URL or a file),
a folder of mfsa*.yml files, or one file.

Advisories are parsed in batches and stored together at the end, in one transaction: a CVE's
Mozilla rating is the highest over all its advisories, and an advisory that failed keeps what
it gave last time (patchflow.catalog.vulnfeeds.store_documents).
"""

from __future__ import annotations

import datetime as dt
import tarfile
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
    outcome,
    read,
)
from sources import mozilla
from sources.records import SourceError, one_line

ARCHIVE = (
    "https://github.com/mozilla/foundation-security-advisories/archive/refs/heads/master.tar.gz"
)
_MAX_MEMBER = 4 * 1024 * 1024


def locations(source: str) -> list[str]:
    """File paths, or "ARCHIVE!MEMBER" inside a .tar.gz, in advisory order."""
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


def _saved(source: str, workdir: str) -> str:
    """An online source, saved into `workdir` (an archive, or one advisory)."""
    raw = download(feed_http(), source)
    if source.lower().split("?")[0].endswith((".yml", ".yaml")):
        target = Path(workdir) / Path(source.split("?")[0]).name
    else:
        target = Path(workdir) / "mozilla-advisories.tar.gz"
    target.write_bytes(raw)
    return str(target)


def _raw(location: str, archives: dict[str, tarfile.TarFile]) -> tuple[str, bytes]:
    if "!" in location and not Path(location).exists():
        archive_path, member = location.split("!", 1)
        archive = archives.get(archive_path)
        if archive is None:
            # closed by sync_batch, which keeps one handle per archive for the batch
            archive = archives[archive_path] = tarfile.open(archive_path, "r:*")  # noqa: SIM115
        info = archive.getmember(member)
        if info.size > _MAX_MEMBER:
            raise SourceError(f"{member}: larger than {_MAX_MEMBER} bytes")
        handle = archive.extractfile(info)
        raw = handle.read() if handle else b""
        name = member.rsplit("/", 1)[-1]
    else:
        raw, name = read(location), Path(location).name
    return name.rsplit(".", 1)[0], raw


class MozillaConnector(FeedBase):
    kind = "mozilla"
    label = "Mozilla advisories"
    default_source = ARCHIVE
    batch_size = 50

    def plan(self, source: str, last_modified: dt.datetime | None, workdir: str) -> Plan:
        try:
            local = _saved(source, workdir) if is_url(source) else source
            return Plan(refs=[{"location": x} for x in locations(local)])
        except SourceError as exc:
            return Plan(error=str(exc))

    def sync_batch(self, source: str, refs: list[dict[str, Any]], log: Log) -> FeedBatch:
        batch = FeedBatch()
        archives: dict[str, tarfile.TarFile] = {}
        try:
            for ref in refs:
                location = ref["location"]
                try:
                    key, raw = _raw(location, archives)
                    advisory = mozilla.parse_advisory(raw, key)
                except SourceError as exc:
                    batch.errors.append(str(exc))
                    continue
                except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
                    batch.errors.append(f"{location.rsplit('/', 1)[-1]}: {one_line(exc)}")
                    continue
                batch.docs[advisory.key] = (advisory.facts, advisory.ranges)
                batch.read += 1
        finally:
            for archive in archives.values():
                archive.close()
        return batch

    def summarise(self, source: str, plan: Plan, batches: list[FeedBatch]) -> FeedResult:
        docs: dict[str, Any] = {}
        errors: list[str] = []
        for batch in batches:
            docs.update(batch.docs)
            errors.extend(batch.errors)
        if not docs and errors:
            return failed(f"no advisory could be read ({errors[0]})")
        with session_scope() as session:
            records = vulnfeeds.store_and_count(session, self.kind, docs,
                                                keep_higher_ratings=bool(errors))
        return outcome(f"{len(docs)} advisories, {records} CVEs", records, errors)


CONNECTOR = MozillaConnector()
