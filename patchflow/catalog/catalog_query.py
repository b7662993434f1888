"""Reading the catalog for people: patch lists with filters, and one patch in full."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from models import Patch, ServerPatch
from models.enums import Category, Severity
from patchflow.catalog.servers import get_server
from patchflow.errors import NotFoundError, UserError
from sources.filters import Filters, package_name, product_allowed

_KB = re.compile(r"^(?:KB)?(\d{4,8})$", re.IGNORECASE)
_MAX_ID = 2**63 - 1


@dataclass
class PatchFilters:
    server: str | None = None
    source: str | None = None
    severities: list[str] | None = None
    categories: list[str] | None = None
    products: list[str] | None = None


def check_choices(values: list[str] | None, allowed: type[Severity] | type[Category],
                  what: str) -> None:
    known = {v.value for v in allowed}
    for value in values or []:
        if value not in known:
            raise UserError(f"unknown {what} {value!r}: use one of {', '.join(sorted(known))}")


def list_patches(session: Session, f: PatchFilters) -> list[dict[str, Any]]:
    check_choices(f.severities, Severity, "severity")
    check_choices(f.categories, Category, "category")
    if f.source and f.source not in ("msrc", "winget", "wsus", "server"):
        raise UserError(f"unknown source {f.source!r}: use msrc, winget, wsus or server")
    query = select(Patch).options(selectinload(Patch.products), selectinload(Patch.cves))
    if f.server:
        server = get_server(session, f.server)
        query = query.join(ServerPatch, ServerPatch.patch_id == Patch.id).where(
            ServerPatch.server_id == server.id
        )
    if f.source:
        query = query.where(Patch.source == f.source)
    if f.severities:
        query = query.where(Patch.severity.in_(f.severities))
    if f.categories:
        query = query.where(Patch.category.in_(f.categories))
    query = query.order_by(Patch.release_date.desc(), Patch.ukey)
    rows = [patch_to_dict(p) for p in session.scalars(query)]
    if f.products:
        wanted = Filters.from_lists(products=f.products)
        rows = [r for r in rows if any(product_allowed(name, wanted, r["package_id"])
                                       for name in _product_names(r))]
    return rows


def _product_names(row: dict[str, Any]) -> list[str]:
    if row["products"]:
        return [p["name"] for p in row["products"]]
    return [package_name(row["title"], row["version"])]


def find_patch(session: Session, ref: str) -> Patch:
    """A patch by id, KB number or PACKAGE@VERSION."""
    patch: Patch | None = None
    # ASCII digits only ("³".isdigit() is true), and no id beyond what a column holds.
    numeric = (ref.isascii() and ref.isdigit() and len(ref) <= len(str(_MAX_ID))
               and int(ref) <= _MAX_ID)
    if numeric and not _KB.match(ref):
        patch = session.get(Patch, int(ref))
    elif numeric:
        patch = session.get(Patch, int(ref)) or session.scalar(
            select(Patch).where(Patch.kb == f"KB{ref}")
        )
    elif match := _KB.match(ref):
        patch = session.scalar(select(Patch).where(Patch.kb == f"KB{match.group(1)}"))
    else:
        patch = session.scalar(select(Patch).where(Patch.ukey == ref))
    if patch is None:
        raise NotFoundError(f"no patch {ref!r} (give an id, a KB number or PACKAGE@VERSION)")
    return patch


def patch_to_dict(p: Patch) -> dict[str, Any]:
    return {
        "id": p.id,
        "source": p.source,
        "kb": p.kb,
        "package_id": p.package_id,
        "version": p.version,
        "title": p.title,
        "vendor": p.vendor,
        "products": [
            {"name": pp.product, "fixed_build": pp.fixed_build, "supersedes": pp.supersedes_kb,
             "subtype": pp.subtype, "severity": pp.severity}
            for pp in sorted(p.products, key=lambda x: x.product)
        ],
        "category": p.category,
        "severity": p.severity,
        "restart_required": p.restart_required,
        "eula_required": p.eula_required,
        "eula_url": p.eula_url,
        "info_url": p.info_url,
        "release_date": p.release_date.isoformat() if p.release_date else None,
        "cves": sorted(c.cve for c in p.cves),
        "superseded_by": p.superseded_by_id,
    }


def patch_detail(session: Session, p: Patch) -> dict[str, Any]:
    data = patch_to_dict(p)
    data["installers"] = [
        {"arch": i.arch, "type": i.type, "scope": i.scope, "locale": i.locale, "url": i.url,
         "sha256": i.sha256, "product_code": i.product_code, "upgrade_code": i.upgrade_code}
        for i in p.installers
    ]
    data["description"] = p.description
    return data
