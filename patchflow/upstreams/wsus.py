"""`--upstream wsus --wsus-url https://wsus.corp:8531`: the organisation's WSUS server over
[MS-WSUSSS], patchflow being the downstream server.

Categories (products, classifications; detectoids are noted and skipped) come first, then the
software updates of every product and classification the WSUS server offers: in this mode the
WSUS administrator has already chosen what is synchronised, so the patch server's own filters
do not apply (third-party packages from winget still follow them).

Each revision's metadata is fetched once: what was stored is remembered per UpdateId and
revision number (sync_documents), so a rerun asks GetUpdateData only for new or changed
revisions. All new metadata is fetched and checked before anything is stored (a bundle and the
updates it bundles must be read together), then stored in documents of up to 500 patches, each
with its bookkeeping in one transaction.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from models import PatchServer, SyncDocument
from models.base import utcnow
from models.db import session_scope
from patchflow.catalog import servers as server_svc
from patchflow.catalog import syncing
from patchflow.catalog.catalog_store import store_document
from patchflow.errors import UserError
from patchflow.upstreams.base import Choice, ConnectorBase, Log
from patchflow.upstreams.wsus_client import WsusClient, decompress_blob, wsus_verify
from sources import wsus_soap as soap
from sources.filters import Filters
from sources.records import ParsedDocument, SourceError
from sources.wsus_metadata import (
    WsusUpdate,
    build_records_with_sources,
    local,
    parse_xml,
    read_update_xml,
)

SOURCE = "wsus"
CATEGORIES = "wsus-cat"
CHUNK = 500


class WsusConnector(ConnectorBase):
    kind = SOURCE
    label = "WSUS"
    task_name = "sync-wsus"
    choices = (Choice("wsus", "WSUS server", "wsus", wizard=True, settings=("wsus_url",),
                      summary="wsus {wsus_url}"),)

    def apply(self, server: PatchServer, opts: Any) -> None:
        if opts.wsus_url is not None:
            server.wsus_url = server_svc.validate_url(opts.wsus_url, "WSUS URL")

    def content_host(self, server: PatchServer) -> str | None:
        """Installer URLs point at the WSUS content service (fetched with [wsus] ca_file)."""
        return server.wsus_url.rstrip("/") if server.wsus_url else None

    def check(self, server: PatchServer) -> None:
        if not server.wsus_url:
            raise UserError("--upstream wsus needs --wsus-url https://wsus-host:8531")

    def sync_batch(self, server_id: int, refs: list[dict[str, Any]] | None, done_before: int,
                   total: int, log: Log) -> dict[str, Any]:
        result = syncing.BatchResult()
        with session_scope() as session:
            server = syncing.server_row(session, server_id)
            client = WsusClient(server.wsus_url or "", f"{server.name}.{server.host}",
                                server_svc.proxies_of(server), wsus_verify())
        try:
            _run(server_id, client, result)
        except syncing.SyncStopped:
            result.stopped = True
        except SourceError as exc:
            log.warning("WSUS sync failed: %s", exc)
            syncing.fail(server_id, SOURCE, "wsus", str(exc), result)
        finally:
            client.close()
        return asdict(result)


def plan(listed: list[soap.RevisionId],
         known: dict[str, tuple[int, str]]) -> list[soap.RevisionId]:
    """The revisions to ask GetUpdateData for: new UpdateIds and changed revisions."""
    return [r for r in listed if known.get(r.update_id, (None, ""))[0] != r.revision]


def _run(server_id: int, client: WsusClient, result: syncing.BatchResult) -> None:
    syncing.progress(server_id, "WSUS: authorizing")
    client.authenticate()
    settings = client.config_data()
    syncing.progress(server_id, "WSUS: categories")
    known_categories = _known(server_id, CATEGORIES)
    listed = client.revisions(get_config=True)
    fetched = _fetch(server_id, client, settings, plan(listed, known_categories), "categories")
    _store_categories(server_id, fetched)
    categories = _categories(server_id)
    products = sorted(u for u, c in categories.items() if c.category_type == "Product")
    classifications = sorted(u for u, c in categories.items()
                             if c.category_type == "UpdateClassification")
    syncing.progress(server_id, "WSUS: listing updates")
    listed = client.revisions(False, products, classifications)
    known = _known(server_id, SOURCE)
    updates = _fetch(server_id, client, settings, plan(listed, known), "updates")
    _decryption(client, settings, updates, result)
    known_keys = {uid: key for uid, (_rev, key) in known.items() if key}
    pairs = build_records_with_sources({**categories, **updates}, known_keys)
    revisions = {u.update_id: u.revision_id or 0 for u in updates.values()}
    done: set[str] = set()
    for start in range(0, len(pairs), CHUNK):
        syncing.progress(server_id, f"WSUS: storing {start + 1}-{min(start + CHUNK, len(pairs))} "
                             f"of {len(pairs)} patches")
        chunk = pairs[start : start + CHUNK]
        doc = ParsedDocument(key=f"wsus/{start // CHUNK}", release_date=None, content_hash="",
                             patches=[record for record, _ in chunk])
        rows = {uid: (revisions[uid], record.key) for record, uids in chunk for uid in uids
                if uid in revisions}
        with session_scope() as session:
            stored = store_document(session, server_id, doc, Filters())
            _remember(session, server_id, SOURCE, rows)
        done.update(rows)
        result.stored += 1
        result.patches += stored.offered
    rest = {uid: (rev, "") for uid, rev in revisions.items() if uid not in done}
    if rest:
        with session_scope() as session:
            _remember(session, server_id, SOURCE, rest)
    syncing.progress(server_id, "WSUS: done")


def _fetch(server_id: int, client: WsusClient, settings: soap.ConfigData,
           ids: list[soap.RevisionId], what: str) -> dict[str, WsusUpdate]:
    """GetUpdateData in the server's batch size, the stop flag checked between batches."""
    updates: dict[str, WsusUpdate] = {}
    size = max(1, settings.max_updates)
    for start in range(0, len(ids), size):
        syncing.progress(server_id, f"WSUS: {what} {start + 1}-{min(start + size, len(ids))} of "
                             f"{len(ids)}")
        batch = ids[start : start + size]
        data = client.update_data(batch)
        answered = {b.id for b in data.updates}
        missing = [r for r in batch if r not in answered]
        if missing:
            raise SourceError(f"WSUS GetUpdateData left out {len(missing)} of {len(batch)} "
                              f"requested updates (first {missing[0].update_id})")
        for blob in data.updates:
            updates[blob.id.update_id] = _update(blob, data.urls, client, settings)
    return updates


def _update(blob: soap.UpdateBlob, urls: dict[str, str], client: WsusClient,
            settings: soap.ConfigData) -> WsusUpdate:
    label = f"WSUS update {blob.id.update_id}"
    if blob.xml is not None:
        xml = blob.xml
    elif blob.compressed is not None:
        xml = decompress_blob(blob.compressed)
    else:
        raise SourceError(f"{label}: no metadata in the answer")
    root = parse_xml(xml, label)
    update = WsusUpdate(update_id=blob.id.update_id, revision_id=blob.id.revision)
    read_update_xml(root, update)
    if update.update_id != blob.id.update_id:
        raise SourceError(f"{label}: its XML describes update {update.update_id}")
    encrypted = _encrypted_digests(root)
    kept = []
    for file in update.files:
        if file.digest in encrypted:
            update.encrypted.append(file.digest)
            continue
        file.url = urls.get(file.digest) if settings.catalog_only else \
            client.content_url(file.digest, file.name)
        kept.append(file)
    update.files = kept
    return update


def _encrypted_digests(root: Any) -> set[str]:
    """Files the metadata marks as encrypted (their content needs a key from
    GetUpdateDecryptionData, and cannot be checked against its SHA-256 before that)."""
    found = set()
    for item in root.iter():
        if local(item.tag) != "File":
            continue
        flags = [v for k, v in item.attrib.items() if "encrypt" in local(k).lower()]
        if any(v.lower() in ("true", "1") for v in flags):
            found.add(item.get("Digest", ""))
    return found


def _decryption(client: WsusClient, settings: soap.ConfigData,
                updates: dict[str, WsusUpdate], result: syncing.BatchResult) -> None:
    """GetUpdateDecryptionData for updates with encrypted files. Their files are left out of
    the catalog's installers (patchflow verifies content by SHA-256 before anything runs), so
    the keys are only counted; the note says how many updates are affected."""
    ids = [soap.RevisionId(u.update_id, u.revision_id or 0) for u in updates.values()
           if u.encrypted and u.revision_id is not None]
    if not ids:
        return
    keys = 0
    size = max(1, settings.max_decryption)
    for start in range(0, len(ids), size):
        keys += sum(client.decryption_data(ids[start : start + size]).values())
    result.errors.append(f"WSUS: {len(ids)} updates have encrypted files ({keys} keys "
                         "received); those files are not offered as installers")


def _known(server_id: int, source: str) -> dict[str, tuple[int, str]]:
    with session_scope() as session:
        rows = session.execute(select(SyncDocument.doc_key, SyncDocument.content_hash,
                                      SyncDocument.message)
                               .filter_by(server_id=server_id, source=source, status="ok"))
        return {uid: (int(rev) if (rev or "").isdigit() else -1, message or "")
                for uid, rev, message in rows}


def _remember(session: Session, server_id: int, source: str,
              rows: dict[str, tuple[int, str]]) -> None:
    """One bookkeeping row per UpdateId: the revision stored and what it became."""
    if not rows:
        return
    keys = list(rows)
    for start in range(0, len(keys), 1000):
        part = keys[start : start + 1000]
        session.execute(delete(SyncDocument).where(
            SyncDocument.server_id == server_id, SyncDocument.source == source,
            SyncDocument.doc_key.in_(part)))
        now = utcnow()
        session.execute(insert(SyncDocument), [
            {"server_id": server_id, "source": source, "doc_key": uid,
             "content_hash": str(rows[uid][0]), "status": "ok", "message": rows[uid][1],
             "patches": 0, "synced_at": now} for uid in part])


def _store_categories(server_id: int, fetched: dict[str, WsusUpdate]) -> None:
    rows = {}
    for uid, update in fetched.items():
        rows[uid] = (update.revision_id or 0, json.dumps({
            "type": update.update_type, "category_type": update.category_type,
            "title": update.title}))
    with session_scope() as session:
        _remember(session, server_id, CATEGORIES, rows)


def _categories(server_id: int) -> dict[str, WsusUpdate]:
    """Products and classifications known from this and earlier syncs, for product names and
    the update filter."""
    categories = {}
    for uid, (_rev, message) in _known(server_id, CATEGORIES).items():
        try:
            data = json.loads(message or "{}")
        except ValueError:
            continue
        if data.get("type") != "Category":
            continue
        categories[uid] = WsusUpdate(update_id=uid, update_type="Category",
                                     category_type=data.get("category_type"),
                                     title=data.get("title"))
    return categories


CONNECTOR = WsusConnector()
