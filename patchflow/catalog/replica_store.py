"""Replication, downstream side: applying one page of upstream changes in one transaction.

The page's patches are stored like any upstream document (the downstream's own filters decide
what this patch server offers, under its own revisions, so it can be the upstream of another
level), the upstream's EULA acceptances are copied, and `replication_revision` moves to the
page's end in the same transaction: an interrupted sync resumes at the first page not applied.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models import EulaAcceptance, Patch, PatchServer, ServerPatch
from patchflow.catalog.catalog_store import StoreResult, offer, store_document
from sources.filters import Filters, passes
from sources.records import ParsedDocument, SourceError
from sources.replica import Acceptance, ReplicaPage


def apply_page(session: Session, server: PatchServer, page: ReplicaPage,
               filters: Filters) -> StoreResult:
    """Store a page fetched from another instance."""
    _check_position(server, page)
    doc = ParsedDocument(key=f"revisions {page.since + 1}-{page.next}", release_date=None,
                         content_hash="", patches=page.records)
    result = store_document(session, server.id, doc, filters)
    _copy_acceptances(session, page.acceptances)
    server.replication_revision = page.next
    return result


def apply_local_page(session: Session, server: PatchServer, page: ReplicaPage,
                     filters: Filters) -> StoreResult:
    """A page from another patch server of this instance: the patches are already in the
    shared catalog, so only this server's offer changes."""
    _check_position(server, page)
    wanted = [r.key for r in page.records if passes(r, filters)]
    rejected = [r.key for r in page.records if not passes(r, filters)]
    ids = dict(session.execute(
        select(Patch.ukey, Patch.id).where(Patch.ukey.in_(wanted + rejected))).all())
    if rejected:
        session.execute(delete(ServerPatch).where(
            ServerPatch.server_id == server.id,
            ServerPatch.patch_id.in_([ids[k] for k in rejected if k in ids])))
    offer(session, server.id, [ids[k] for k in wanted if k in ids])
    server.replication_revision = page.next
    return StoreResult(offered=len(wanted), filtered_out=len(rejected))


def _check_position(server: PatchServer, page: ReplicaPage) -> None:
    if server.replication_revision != page.since:
        raise SourceError(
            f"another sync of {server.name} moved to revision {server.replication_revision} "
            f"meanwhile; run the sync again")


def _copy_acceptances(session: Session, acceptances: list[Acceptance]) -> None:
    if not acceptances:
        return
    ids = dict(session.execute(select(Patch.ukey, Patch.id).where(
        Patch.ukey.in_([a.key for a in acceptances]))).all())
    known = set(session.scalars(select(EulaAcceptance.patch_id).where(
        EulaAcceptance.patch_id.in_(list(ids.values())))))
    for acceptance in acceptances:
        pid = ids.get(acceptance.key)
        if pid is not None and pid not in known:
            session.add(EulaAcceptance(patch_id=pid, accepted_by=acceptance.by[:128],
                                       accepted_at=acceptance.at))
            known.add(pid)
