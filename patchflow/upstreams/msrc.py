"""MSRC's CVRF feed (`--upstream microsoft`): the online API or a mirror folder of monthly
documents. The offline catalog wsusscn2.cab, also `--upstream microsoft`, is its own connector.

Online, the /updates index is read first and months whose release date has not changed since
the last sync are not even downloaded (`plan`); a downloaded document whose bytes did not
change is skipped before it is parsed. One parse gives the patches and the CVE facts (CVSS,
exploitation status) for the vulnerability views.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import select

from models import PatchServer, SyncDocument
from models.db import session_scope
from patchflow.catalog import servers as server_svc
from patchflow.catalog import syncing, vulnfeeds
from patchflow.errors import UserError
from patchflow.http import describe_error
from patchflow.upstreams.base import Choice, ConnectorBase, Log, Plan
from sources import msrc, wsusscn2
from sources.records import ParsedDocument, SourceError

SOURCE = "msrc"
DEFAULT_SOURCE = "https://api.msrc.microsoft.com/cvrf/v3.0/"


@dataclass
class DocRef:
    """Where to get one document: a file of an offline mirror or a URL, plus what we know."""

    key: str
    location: str
    release_date: str | None = None


def online(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def uses_offline_catalog(msrc_source: str | None) -> bool:
    """Whether an MSRC source setting names a wsusscn2 catalog rather than the CVRF feed."""
    if not msrc_source or online(msrc_source):
        return False
    try:
        return wsusscn2.is_catalog(Path(msrc_source))
    except OSError:
        return False


def validate_source(value: str) -> str | None:
    """The CVRF API URL, a folder of CVRF documents, or Microsoft's offline catalog: a
    wsusscn2.cab file or the folder it was extracted to."""
    source = server_svc.validate_source(value, "MSRC source")
    if source and Path(source).is_file():
        with Path(source).open("rb") as handle:
            if handle.read(4) != b"MSCF":
                raise UserError(
                    f"invalid MSRC source {value!r}: a file must be a wsusscn2.cab cabinet "
                    "(or give a folder of CVRF documents, or the extracted catalog folder)"
                )
    return source


def plan(entries: list[dict[str, Any]], known: dict[str, dt.date | None],
         base: str) -> list[DocRef]:
    """The documents of the /updates index to download, oldest first: a month whose release
    date equals the one stored by the last successful sync is left out."""
    refs = []
    # Undated entries first (a mix of dates and IDs as sort keys would not compare).
    for entry in sorted(entries, key=lambda e: (e["CurrentReleaseDate"] or dt.date.min, e["ID"])):
        released = entry["CurrentReleaseDate"]
        if released is not None and known.get(entry["ID"]) == released:
            continue
        url = entry["CvrfUrl"] or msrc.document_url(entry["ID"], base)
        refs.append(DocRef(entry["ID"], url, released.isoformat() if released else None))
    return refs


def fetch(ref: DocRef, http: requests.Session) -> bytes:
    """One document's raw bytes, from the API or the mirror folder."""
    if online(ref.location):
        try:
            return msrc.fetch_url(http, ref.location, timeout=(10, 120))
        except requests.RequestException as exc:
            raise SourceError(f"{ref.key}: {describe_error(exc)}") from None
    try:
        return Path(ref.location).read_bytes()
    except OSError as exc:
        raise SourceError(f"{ref.key}: cannot read {ref.location}: {exc.strerror}") from None


def parse(raw: bytes, ref: DocRef) -> tuple[ParsedDocument, list[msrc.MsrcCveScores]]:
    return msrc.parse_cvrf_month(raw, key=ref.key)


class MsrcConnector(ConnectorBase):
    kind = SOURCE
    label = "MSRC"
    task_name = "sync-msrc-batch"
    choices = (Choice("microsoft", "Microsoft", "microsoft", wizard=True,
                      summary="Microsoft (security update feed and winget catalog)"),)
    plans_ahead = True
    batch_size = 24

    def defaults(self, server: PatchServer) -> None:
        server.msrc_source = DEFAULT_SOURCE

    def apply(self, server: PatchServer, opts: Any) -> None:
        """`--msrc-source`, shared with the offline catalog (wsusscn2) connector."""
        if opts.msrc_source is not None:
            server.msrc_source = validate_source(opts.msrc_source)

    def selected(self, server: PatchServer) -> bool:
        return server.upstream == "microsoft" and not uses_offline_catalog(server.msrc_source)

    def plan_refs(self, server_id: int) -> Plan:
        try:
            return Plan(refs=[asdict(r) for r in self._refs(server_id)])
        except SourceError as exc:
            return Plan(error=str(exc))

    def _refs(self, server_id: int) -> list[DocRef]:
        with session_scope() as session:
            server = syncing.server_row(session, server_id)
            source = server.msrc_source or DEFAULT_SOURCE
            http = syncing.http_for(server) if online(source) else None
            known = {
                row.doc_key: row.release_date
                for row in session.scalars(select(SyncDocument).filter_by(
                    server_id=server_id, source=SOURCE, status="ok"))
            }
        if http is None:
            if not Path(source).is_dir():
                raise SourceError(f"MSRC source folder {source} does not exist")
            return [DocRef(key, str(file)) for key, file in msrc.list_directory(source)]
        base = source if source.endswith("/") else source + "/"
        try:
            entries = msrc.parse_updates_index(msrc.fetch_updates_index(http, base))
        except requests.RequestException as exc:
            raise SourceError(f"MSRC index {base}updates: {describe_error(exc)}") from None
        return plan(entries, known, base)

    def sync_batch(self, server_id: int, refs: list[dict[str, Any]] | None, done_before: int,
                   total: int, log: Log) -> dict[str, Any]:
        result = syncing.BatchResult()
        with session_scope() as session:
            server = syncing.server_row(session, server_id)
            filters, http = syncing.filters_of(server), syncing.http_for(server)
        for n, raw_ref in enumerate(refs or [], done_before + 1):
            ref = DocRef(**raw_ref)
            try:
                syncing.progress(server_id, f"MSRC document {n}/{total}: {ref.key}")
            except syncing.SyncStopped:
                result.stopped = True
                break
            try:
                raw = fetch(ref, http)
                if syncing.unchanged(server_id, SOURCE, ref.key, msrc.content_hash(raw, ref.key)):
                    result.skipped += 1
                    continue
                doc, scores = parse(raw, ref)
            except SourceError as exc:
                log.warning("MSRC %s failed: %s", ref.key, exc)
                syncing.fail(server_id, SOURCE, ref.key, str(exc), result)
                continue
            # Compared above under the file's key; a document naming itself differently is
            # compared once more under its own.
            syncing.store(server_id, SOURCE, doc, filters, result, checked=doc.key == ref.key)
            _store_vulnerabilities(scores)
            log.info("MSRC %s: %d patches", ref.key, len(doc.patches))
        return asdict(result)


def _store_vulnerabilities(scores: list[msrc.MsrcCveScores]) -> None:
    """CVSS v3 and exploitation status of the document's CVEs, for the vulnerability views."""
    with session_scope() as session:
        vulnfeeds.store_documents(session, "msrc", {s.facts.cve: ([s.facts], []) for s in scores
                                                    if len(s.facts.cve) <= 32},
                                  keep_higher_ratings=False)


CONNECTOR = MsrcConnector()
