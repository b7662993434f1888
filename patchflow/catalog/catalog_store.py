"""Writes parsed upstream documents into the catalog, one document per transaction.

The catalog keeps each patch whole; `server_patches` says which patch servers offer it, with a
per-server revision that increases on every change (replication pages through it). MSRC KBs can
reappear in a later month's document (a CVE published after its fix), so MSRC records are merged
into what is stored; third-party versions are replaced whole.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, insert, select, tuple_, update
from sqlalchemy.orm import Session

from models import (
    Patch,
    PatchCve,
    PatchInstaller,
    PatchProduct,
    Product,
    ServerPatch,
    Supersedence,
    SyncDocument,
)
from models.base import utcnow
from sources.filters import Filters, passes, product_names
from sources.records import ParsedDocument, PatchRecord, severity_rank

_RESTART_RANK = {"Not Required": 0, "May Require": 1, "Required": 2}


@dataclass
class StoreResult:
    offered: int  # patches this server offers from the document
    filtered_out: int


def document_unchanged(
    session: Session, server_id: int, source: str, doc_key: str, content_hash: str
) -> bool:
    row = session.scalar(
        select(SyncDocument).filter_by(server_id=server_id, source=source, doc_key=doc_key)
    )
    return row is not None and row.status == "ok" and row.content_hash == content_hash


def record_document(
    session: Session,
    server_id: int,
    source: str,
    doc_key: str,
    *,
    content_hash: str | None,
    release_date: dt.date | None,
    status: str,
    message: str | None,
    patches: int = 0,
) -> None:
    """Remember a document's outcome; a failed one keeps its old hash so it is retried."""
    row = session.scalar(
        select(SyncDocument).filter_by(server_id=server_id, source=source, doc_key=doc_key)
    )
    if row is None:
        row = SyncDocument(server_id=server_id, source=source, doc_key=doc_key)
        session.add(row)
    if status == "ok":
        row.content_hash = content_hash
        row.release_date = release_date
        row.patches = patches
    row.status = status
    row.message = message
    row.synced_at = utcnow()


def store_document(
    session: Session, server_id: int, doc: ParsedDocument, filters: Filters
) -> StoreResult:
    wanted = [r for r in doc.patches if passes(r, filters)]
    rejected = [r.key for r in doc.patches if not passes(r, filters)]
    ids = upsert_patches(session, wanted)
    if rejected:
        stale = select(Patch.id).where(Patch.ukey.in_(rejected))
        session.execute(
            delete(ServerPatch).where(
                ServerPatch.server_id == server_id, ServerPatch.patch_id.in_(stale)
            )
        )
    offer(session, server_id, [ids[r.key] for r in wanted])
    return StoreResult(offered=len(wanted), filtered_out=len(rejected))


def upsert_patches(session: Session, records: Sequence[PatchRecord]) -> dict[str, int]:
    """Insert or update records; returns catalog key -> patch id."""
    if not records:
        return {}
    keys = [r.key for r in records]
    existing = {
        ukey: (pid, severity, restart)
        for ukey, pid, severity, restart in session.execute(
            select(Patch.ukey, Patch.id, Patch.severity, Patch.restart_required).where(
                Patch.ukey.in_(keys)
            )
        )
    }
    new_rows = [_patch_row(r) for r in records if r.key not in existing]
    if new_rows:
        session.execute(insert(Patch), new_rows)
    updates = []
    for record in records:
        if record.key not in existing:
            continue
        pid, severity, restart = existing[record.key]
        row = _patch_row(record)
        if record.source == "msrc":
            # Merge: a later document adds products and CVEs, never lowers what is known.
            row = {
                "severity": max(severity, record.severity, key=severity_rank),
                "restart_required": max(restart, record.restart_required,
                                        key=lambda v: _RESTART_RANK.get(v, 1)),
                "updated_at": utcnow(),
            }
        row["id"] = pid
        updates.append(row)
    if updates:
        session.execute(update(Patch), updates)
    ids = dict(session.execute(select(Patch.ukey, Patch.id).where(Patch.ukey.in_(keys))).all())
    _replace_children(session, records, ids, {k for k in existing})
    _link_supersedence(session, records, ids)
    _register_products(session, records)
    return ids


def _patch_row(r: PatchRecord) -> dict[str, object]:
    return {
        "source": r.source,
        "ukey": r.key,
        "kb": r.kb,
        "package_id": r.package_id,
        "version": r.version,
        "title": r.title[:512],
        "vendor": r.vendor[:255],
        "category": r.category,
        "severity": r.severity,
        "restart_required": r.restart_required,
        "eula_required": r.eula_required,
        "eula_url": r.eula_url,
        "info_url": r.info_url,
        "description": r.description,
        "languages": json.dumps(list(r.languages)) if r.languages else None,
        "release_date": r.release_date,
        "updated_at": utcnow(),
    }


def _replace_children(
    session: Session, records: Sequence[PatchRecord], ids: dict[str, int], existed: set[str]
) -> None:
    merge = {ids[r.key] for r in records if r.source == "msrc" and r.key in existed}
    replace_ids = [ids[r.key] for r in records if ids[r.key] not in merge]
    if replace_ids:
        for table in (PatchProduct, PatchCve, PatchInstaller, Supersedence):
            session.execute(delete(table).where(table.patch_id.in_(replace_ids)))
    if merge:
        # Products named again are replaced, others kept; CVEs and supersedence are unions.
        pairs = sorted({(ids[r.key], p.name[:255]) for r in records if ids[r.key] in merge
                        for p in r.products})
        for start in range(0, len(pairs), 500):
            session.execute(delete(PatchProduct).where(
                tuple_(PatchProduct.patch_id, PatchProduct.product).in_(pairs[start:start + 500])))
    known_cves = _existing_pairs(session, PatchCve.patch_id, PatchCve.cve, merge)
    known_sup = _existing_pairs(session, Supersedence.patch_id, Supersedence.supersedes_key, merge)
    products, cves, installers, sups = [], [], [], []
    for r in records:
        pid = ids[r.key]
        for p in r.products:
            products.append({
                "patch_id": pid, "product": p.name[:255], "fixed_build": p.fixed_build,
                "supersedes_kb": p.supersedes, "subtype": p.subtype, "severity": p.severity,
                "restart_required": p.restart_required,
            })
        for cve in sorted(set(r.cves)):
            if (pid, cve) not in known_cves:
                cves.append({"patch_id": pid, "cve": cve})
        for i in r.installers:
            installers.append({
                "patch_id": pid, "url": i.url, "sha256": i.sha256, "type": i.type,
                "arch": i.arch, "scope": i.scope, "locale": i.locale,
                "silent_switches": i.silent_switches, "product_code": i.product_code,
                "upgrade_code": i.upgrade_code,
                "apps_and_features": json.dumps(list(i.apps_and_features))
                if i.apps_and_features else None,
            })
        for key in sorted(set(r.supersedes)):
            if (pid, key) not in known_sup:
                sups.append({"patch_id": pid, "supersedes_key": key})
    for table, rows in ((PatchProduct, products), (PatchCve, cves),
                        (PatchInstaller, installers), (Supersedence, sups)):
        if rows:
            session.execute(insert(table), rows)


def _existing_pairs(session: Session, id_col, value_col, ids: set[int]) -> set[tuple[int, str]]:  # type: ignore[no-untyped-def]
    if not ids:
        return set()
    return set(session.execute(select(id_col, value_col).where(id_col.in_(ids))).all())


def _link_supersedence(
    session: Session, records: Sequence[PatchRecord], ids: dict[str, int]
) -> None:
    """Point superseded patches at their newest superseder, whichever was stored first."""
    keys = list(ids)
    rows = session.execute(
        select(Supersedence.supersedes_key, Supersedence.patch_id, Patch.release_date)
        .join(Patch, Patch.id == Supersedence.patch_id)
        .where(Supersedence.supersedes_key.in_(keys) | Supersedence.patch_id.in_(ids.values()))
    ).all()
    winner: dict[str, tuple[dt.date, int]] = {}
    for key, pid, released in rows:
        rank = (released or dt.date.min, pid)
        if key not in winner or rank > winner[key]:
            winner[key] = rank
    if not winner:
        return
    targets = dict(
        session.execute(select(Patch.ukey, Patch.id).where(Patch.ukey.in_(list(winner)))).all()
    )
    updates = [
        {"id": targets[key], "superseded_by_id": pid}
        for key, (_, pid) in winner.items()
        if key in targets and targets[key] != pid
    ]
    if updates:
        session.execute(update(Patch), updates)


def _register_products(session: Session, records: Iterable[PatchRecord]) -> None:
    names: dict[str, str] = {}
    for r in records:
        for name in product_names(r):
            names.setdefault(name[:255], r.source)
    if not names:
        return
    known = set(session.scalars(select(Product.name).where(Product.name.in_(list(names)))))
    rows = [{"name": n, "source": s} for n, s in names.items() if n not in known]
    if rows:
        session.execute(insert(Product), rows)


def offer(session: Session, server_id: int, patch_ids: Sequence[int]) -> None:
    """Give each offered patch a fresh revision on this server (one per patch, for paging)."""
    if not patch_ids:
        return
    unique = list(dict.fromkeys(patch_ids))
    top = session.scalar(
        select(func.coalesce(func.max(ServerPatch.revision), 0)).where(
            ServerPatch.server_id == server_id
        )
    ) or 0
    session.execute(
        delete(ServerPatch).where(
            ServerPatch.server_id == server_id, ServerPatch.patch_id.in_(unique)
        )
    )
    session.execute(
        insert(ServerPatch),
        [{"server_id": server_id, "patch_id": pid, "revision": top + n}
         for n, pid in enumerate(unique, 1)],
    )
