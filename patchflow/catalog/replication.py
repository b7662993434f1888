"""Replication, upstream side: replication tokens, and the pages of catalog changes another
patchflow instance pages through.

A patch server's offer (`server_patches`) carries a revision that increases on every change, one
per patch, so "everything after revision R, in revision order" is an index range scan and a
reader that stopped anywhere resumes exactly there. A page lists whole patches (products, CVEs,
installers, supersedence, EULA acceptance): the downstream stores each one as the upstream has
it, under its own revisions. Accepting a EULA re-offers the patch (`accept_eula`), so the
acceptance travels down the hierarchy like any other change.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from models import (
    ApiToken,
    EulaAcceptance,
    Patch,
    PatchCve,
    PatchInstaller,
    PatchProduct,
    PatchServer,
    ServerPatch,
    Supersedence,
)
from models.base import utcnow
from patchflow import crypto
from patchflow.catalog.catalog_store import offer
from patchflow.errors import NotFoundError, UserError
from patchflow.fleet.errors import Forbidden, Unauthorized
from patchflow.fleet.tokens import validate_name
from sources.replica import FORMAT

TOKEN_PREFIX = "pfr_"
DEFAULT_PAGE = 1000
MAX_PAGE = 5000
KIND = "replication"


# --- tokens ---------------------------------------------------------------------------------


def create_token(session: Session, name: str = "replica") -> str:
    """A replication token; returned once, stored only as its hash."""
    validate_name(name, "token")
    token = TOKEN_PREFIX + crypto.new_token()
    session.add(ApiToken(kind=KIND, name=name, token_hash=crypto.hash_token(token),
                         revoked=False, created_at=utcnow()))
    session.flush()
    return token


def list_tokens(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(ApiToken).where(ApiToken.kind == KIND).order_by(ApiToken.id))
    return [{"id": r.id, "name": r.name, "created_at": r.created_at.isoformat(),
             "revoked": r.revoked} for r in rows]


def revoke_token(session: Session, token_id: int) -> None:
    row = session.get(ApiToken, token_id)
    if row is None or row.kind != KIND:
        raise NotFoundError(f"no replication token with id {token_id}")
    row.revoked = True
    session.flush()


def token_name(engine: Engine, token: str | None) -> str:
    """The name of a valid replication token (looked up by hash); 401 unknown, 403 revoked."""
    if not token:
        raise Unauthorized("replication token required (Authorization: Bearer <token>)")
    with engine.connect() as conn:
        row = conn.execute(
            select(ApiToken.name, ApiToken.revoked).where(
                ApiToken.token_hash == crypto.hash_token(token), ApiToken.kind == KIND)
        ).first()
    if row is None:
        raise Unauthorized("invalid replication token")
    if row.revoked:
        raise Forbidden("replication token revoked")
    return str(row.name)


# --- pages ----------------------------------------------------------------------------------


def served_server(session: Session, name: str | None) -> PatchServer:
    """The patch server a downstream replicates: the one named, else "local", else the
    first one created."""
    if name:
        server = session.scalar(select(PatchServer).filter_by(name=name))
        if server is None:
            raise NotFoundError(f"no patch server named {name!r} on this upstream")
        return server
    server = session.scalar(select(PatchServer).filter_by(name="local")) or session.scalar(
        select(PatchServer).order_by(PatchServer.id).limit(1))
    if server is None:
        raise NotFoundError("this upstream has no patch server yet")
    return server


def changes_page(session: Session, server: PatchServer, since: int,
                 limit: int = DEFAULT_PAGE) -> dict[str, Any]:
    """The patches `server` offers with a revision above `since`, oldest first, at most
    `limit`; `next` is the revision to ask for after this page."""
    if since < 0:
        raise UserError("since must be 0 or more")
    if not 1 <= limit <= MAX_PAGE:
        raise UserError(f"limit must be between 1 and {MAX_PAGE}")
    latest = session.scalar(
        select(func.coalesce(func.max(ServerPatch.revision), 0))
        .where(ServerPatch.server_id == server.id)) or 0
    rows = session.execute(
        select(ServerPatch.revision, Patch.id, Patch.source, Patch.ukey, Patch.kb,
               Patch.package_id, Patch.version, Patch.title, Patch.vendor, Patch.category,
               Patch.severity, Patch.restart_required, Patch.eula_required, Patch.eula_url,
               Patch.info_url, Patch.description, Patch.languages, Patch.release_date)
        .join(Patch, Patch.id == ServerPatch.patch_id)
        .where(ServerPatch.server_id == server.id, ServerPatch.revision > since,
               ServerPatch.revision <= latest)
        .order_by(ServerPatch.revision)
        .limit(limit)
    ).all()
    upper = rows[-1].revision if rows else since
    children = _children(session, server.id, since, upper)
    patches = [_patch(row, children) for row in rows]
    return {"format": FORMAT, "server": server.name, "since": since, "next": upper,
            "latest": latest, "more": upper < latest, "patches": patches}


def encode_page(page: dict[str, Any]) -> bytes:
    return json.dumps(page, separators=(",", ":"), ensure_ascii=False).encode()


def _in_range(server_id: int, since: int, upper: int):  # type: ignore[no-untyped-def]
    """Children of the page's patches, selected by the same revision range (an index range on
    server_patches) rather than a list of ids."""
    return select(ServerPatch.patch_id).where(
        ServerPatch.server_id == server_id, ServerPatch.revision > since,
        ServerPatch.revision <= upper)


def _children(session: Session, server_id: int, since: int,
              upper: int) -> dict[str, dict[int, list[Any]]]:
    found: dict[str, dict[int, list[Any]]] = {
        k: defaultdict(list) for k in ("products", "cves", "installers", "supersedes", "eula")}
    if upper <= since:
        return found
    ids = _in_range(server_id, since, upper)
    for row in session.execute(
        select(PatchProduct.patch_id, PatchProduct.product, PatchProduct.fixed_build,
               PatchProduct.supersedes_kb, PatchProduct.subtype, PatchProduct.severity,
               PatchProduct.restart_required)
        .where(PatchProduct.patch_id.in_(ids)).order_by(PatchProduct.patch_id, PatchProduct.id)
    ):
        found["products"][row[0]].append({
            "name": row[1], "fixed_build": row[2], "supersedes": row[3], "subtype": row[4],
            "severity": row[5], "restart_required": row[6]})
    for pid, cve in session.execute(
        select(PatchCve.patch_id, PatchCve.cve).where(PatchCve.patch_id.in_(ids))
        .order_by(PatchCve.patch_id, PatchCve.cve)
    ):
        found["cves"][pid].append(cve)
    for row in session.execute(
        select(PatchInstaller.patch_id, PatchInstaller.url, PatchInstaller.sha256,
               PatchInstaller.type, PatchInstaller.arch, PatchInstaller.scope,
               PatchInstaller.locale, PatchInstaller.silent_switches,
               PatchInstaller.product_code, PatchInstaller.upgrade_code,
               PatchInstaller.apps_and_features)
        .where(PatchInstaller.patch_id.in_(ids))
        .order_by(PatchInstaller.patch_id, PatchInstaller.id)
    ):
        found["installers"][row[0]].append({
            "url": row[1], "sha256": row[2], "type": row[3], "arch": row[4], "scope": row[5],
            "locale": row[6], "silent_switches": row[7], "product_code": row[8],
            "upgrade_code": row[9], "apps_and_features": json.loads(row[10] or "[]")})
    for pid, key in session.execute(
        select(Supersedence.patch_id, Supersedence.supersedes_key)
        .where(Supersedence.patch_id.in_(ids))
        .order_by(Supersedence.patch_id, Supersedence.supersedes_key)
    ):
        found["supersedes"][pid].append(key)
    for pid, by, at in session.execute(
        select(EulaAcceptance.patch_id, EulaAcceptance.accepted_by, EulaAcceptance.accepted_at)
        .where(EulaAcceptance.patch_id.in_(ids))
    ):
        found["eula"][pid].append({"by": by, "at": at.isoformat()})
    return found


def _patch(row: Any, children: dict[str, dict[int, list[Any]]]) -> dict[str, Any]:
    pid = row.id
    eula = children["eula"].get(pid)
    return {
        "revision": row.revision, "key": row.ukey, "source": row.source, "kb": row.kb,
        "package_id": row.package_id, "version": row.version, "title": row.title,
        "vendor": row.vendor, "category": row.category, "severity": row.severity,
        "restart_required": row.restart_required, "eula_required": row.eula_required,
        "eula_url": row.eula_url, "info_url": row.info_url, "description": row.description,
        "languages": json.loads(row.languages) if row.languages else [],
        "release_date": row.release_date.isoformat() if row.release_date else None,
        "products": children["products"].get(pid, []),
        "cves": children["cves"].get(pid, []),
        "installers": children["installers"].get(pid, []),
        "supersedes": children["supersedes"].get(pid, []),
        "eula_accepted": eula[0] if eula else None,
    }


# --- changes that must travel down ----------------------------------------------------------


def reoffer(session: Session, patch_ids: list[int]) -> None:
    """Give these patches a new revision on every patch server offering them, so downstream
    replicas pick up a change that is not part of the patch row (a EULA acceptance)."""
    if not patch_ids:
        return
    offered: dict[int, list[int]] = defaultdict(list)
    for server_id, patch_id in session.execute(
        select(ServerPatch.server_id, ServerPatch.patch_id)
        .where(ServerPatch.patch_id.in_(patch_ids)).order_by(ServerPatch.revision)
    ):
        offered[server_id].append(patch_id)
    for server_id, ids in offered.items():
        offer(session, server_id, ids)


def accept_eula(session: Session, patch_id: int, by: str) -> None:
    """Record a EULA acceptance (once) and let replicas know. The install workflow should
    accept through here rather than insert EulaAcceptance rows itself."""
    if session.get(Patch, patch_id) is None:
        raise NotFoundError(f"no patch with id {patch_id}")
    if session.get(EulaAcceptance, patch_id) is None:
        session.add(EulaAcceptance(patch_id=patch_id, accepted_by=by[:128], accepted_at=utcnow()))
        session.flush()
        reoffer(session, [patch_id])
