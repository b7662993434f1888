"""A page of replication changes from another patchflow instance, checked and turned into
patch records.

The page is the upstream's answer to `GET /api/v1/replication/patches?since=R&limit=N`. It is
validated whole (types, the product's vocabularies, SHA-256 shapes, revision order) before any
of it is used: a page that is cut off, reordered or not patchflow's JSON at all is refused with
one line, and the caller applies nothing of it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from sources.records import (
    ARCHES,
    CATEGORIES,
    INSTALLER_TYPES,
    RESTART_VALUES,
    SEVERITIES,
    InstallerRecord,
    PatchRecord,
    ProductRow,
    SourceError,
)

FORMAT = "patchflow-replication/1"

Str = Annotated[str, StringConstraints(max_length=4000)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=255)]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Severity = Literal[SEVERITIES]  # type: ignore[valid-type]
Category = Literal[CATEGORIES]  # type: ignore[valid-type]
Restart = Literal[RESTART_VALUES]  # type: ignore[valid-type]
InstallerType = Literal[INSTALLER_TYPES]  # type: ignore[valid-type]
Arch = Literal[ARCHES]  # type: ignore[valid-type]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class ProductIn(_Model):
    name: Name
    fixed_build: Str | None = None
    supersedes: Annotated[str, StringConstraints(max_length=16)] | None = None
    subtype: Annotated[str, StringConstraints(max_length=64)] | None = None
    severity: Severity = "Unspecified"
    restart_required: Restart | None = None


class InstallerIn(_Model):
    url: Annotated[str, StringConstraints(min_length=1, max_length=8000)]
    sha256: Sha256
    type: InstallerType
    arch: Arch
    scope: Annotated[str, StringConstraints(max_length=16)] | None = None
    locale: Annotated[str, StringConstraints(max_length=16)] | None = None
    silent_switches: Annotated[str, StringConstraints(max_length=512)] | None = None
    product_code: Annotated[str, StringConstraints(max_length=128)] | None = None
    upgrade_code: Annotated[str, StringConstraints(max_length=64)] | None = None
    apps_and_features: list[dict[str, str]] = Field(default_factory=list)


class EulaIn(_Model):
    by: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    at: dt.datetime


class PatchIn(_Model):
    revision: int = Field(ge=1)
    key: Name
    source: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    kb: Annotated[str, StringConstraints(max_length=16)] | None = None
    package_id: Name | None = None
    version: Annotated[str, StringConstraints(max_length=64)] | None = None
    title: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    vendor: Annotated[str, StringConstraints(max_length=255)]
    category: Category
    severity: Severity
    restart_required: Restart
    eula_required: bool = False
    eula_url: Annotated[str, StringConstraints(max_length=1024)] | None = None
    info_url: Annotated[str, StringConstraints(max_length=1024)] | None = None
    description: Annotated[str, StringConstraints(max_length=100_000)] | None = None
    languages: list[Annotated[str, StringConstraints(max_length=16)]] = Field(default_factory=list)
    release_date: dt.date | None = None
    products: list[ProductIn] = Field(default_factory=list)
    cves: list[Annotated[str, StringConstraints(max_length=32)]] = Field(default_factory=list)
    installers: list[InstallerIn] = Field(default_factory=list)
    supersedes: list[Name] = Field(default_factory=list)
    eula_accepted: EulaIn | None = None


class PageIn(_Model):
    format: Literal["patchflow-replication/1"]
    server: Name
    since: int = Field(ge=0)
    next: int = Field(ge=0)
    latest: int = Field(ge=0)
    more: bool
    patches: list[PatchIn]


@dataclass(frozen=True)
class Acceptance:
    key: str
    by: str
    at: dt.datetime


@dataclass
class ReplicaPage:
    server: str
    since: int
    next: int
    latest: int
    more: bool
    records: list[PatchRecord]
    acceptances: list[Acceptance]


def parse_page(raw: bytes, since: int) -> ReplicaPage:
    """Check one page and convert it; SourceError (one line) when anything is off."""
    label = f"replication page after revision {since}"
    try:
        page = PageIn.model_validate_json(raw)
    except ValidationError as exc:
        raise SourceError(f"{label}: {_describe(exc, raw)}") from None
    if page.since != since:
        raise SourceError(f"{label}: the upstream answered for revision {page.since}")
    revisions = [p.revision for p in page.patches]
    if revisions != sorted(set(revisions)) or any(r <= since for r in revisions):
        raise SourceError(f"{label}: revisions out of order")
    if page.patches and page.next != revisions[-1]:
        raise SourceError(f"{label}: next revision {page.next} does not follow its patches")
    if not page.patches and (page.next != since or page.more):
        raise SourceError(f"{label}: empty page that claims more changes")
    if page.next > page.latest:
        raise SourceError(f"{label}: next revision beyond the latest one")
    keys = [p.key for p in page.patches]
    if len(set(keys)) != len(keys):
        raise SourceError(f"{label}: a patch appears twice")
    records = [_record(p) for p in page.patches]
    acceptances = [Acceptance(p.key, p.eula_accepted.by, p.eula_accepted.at)
                   for p in page.patches if p.eula_accepted is not None]
    return ReplicaPage(page.server, page.since, page.next, page.latest, page.more, records,
                       acceptances)


def _record(p: PatchIn) -> PatchRecord:
    return PatchRecord(
        source=p.source, key=p.key, title=p.title, vendor=p.vendor, category=p.category,
        severity=p.severity, restart_required=p.restart_required, kb=p.kb,
        package_id=p.package_id, version=p.version, release_date=p.release_date,
        eula_required=p.eula_required, eula_url=p.eula_url, info_url=p.info_url,
        description=p.description, languages=tuple(p.languages),
        products=tuple(ProductRow(name=r.name, fixed_build=r.fixed_build,
                                  supersedes=r.supersedes, subtype=r.subtype,
                                  severity=r.severity, restart_required=r.restart_required)
                       for r in p.products),
        cves=tuple(p.cves),
        installers=tuple(InstallerRecord(
            url=i.url, sha256=i.sha256, type=i.type, arch=i.arch, scope=i.scope,
            locale=i.locale, silent_switches=i.silent_switches, product_code=i.product_code,
            upgrade_code=i.upgrade_code, apps_and_features=tuple(i.apps_and_features))
            for i in p.installers),
        supersedes=tuple(p.supersedes),
    )


def _describe(exc: ValidationError, raw: bytes) -> str:
    first = exc.errors()[0] if exc.errors() else {}
    if first.get("type") == "json_invalid":
        if raw.lstrip()[:1] not in (b"{", b"["):
            return "not JSON (is the URL a patchflow server?)"
        return "truncated or malformed JSON"
    location = ".".join(str(part) for part in first.get("loc", ()))
    return f"unexpected content at {location or 'top level'}: {first.get('msg', 'invalid')}"
