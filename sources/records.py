"""Normalized patch records shared by every upstream parser.

Parsers return these plain, frozen records so that storage, filtering and the scan engine never
depend on the shape of an upstream document (CVRF JSON/XML, winget YAML, WSUS XML, replication
JSON).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("Critical", "Important", "Moderate", "Low", "Unspecified")
CATEGORIES = (
    "Security Updates",
    "Update Rollups",
    "Applications",
    "Service Packs",
    "Feature Packs",
    "Updates",
    "Definition Updates",
    "Critical Updates",
    "Tools",
    "Drivers",
    "Upgrades",
)
RESTART_VALUES = ("Required", "Not Required", "May Require")
INSTALLER_TYPES = (
    "msi", "wix", "exe", "nullsoft", "inno", "burn", "zip",
    "msix", "appx", "portable", "msu", "cab",
)
ARCHES = ("x64", "x86", "arm64", "arm", "neutral")


def severity_rank(severity: str | None) -> int:
    """Higher is worse; unknown values rank with Unspecified so they never win a max()."""
    order = {"Critical": 4, "Important": 3, "Moderate": 2, "Low": 1}
    return order.get(severity or "", 0)


@dataclass(frozen=True)
class ProductRow:
    """One product a patch applies to (MSRC: one Vendor Fix row per product)."""

    name: str
    fixed_build: str | None = None
    supersedes: str | None = None  # "KB5034123" or None
    subtype: str | None = None  # MSRC SubType, e.g. "Security Update", "Monthly Rollup", "Hotpatch"
    severity: str = "Unspecified"  # highest severity over the CVEs fixed on this product
    restart_required: str | None = None  # Required / Not Required / May Require, None if not given


@dataclass(frozen=True)
class InstallerRecord:
    """One downloadable installer of a third-party package version (or an .msu/.cab for a KB)."""

    url: str
    sha256: str  # lowercase hex, 64 chars
    type: str  # one of INSTALLER_TYPES
    arch: str  # one of ARCHES
    scope: str | None = None  # "machine" / "user" / None
    locale: str | None = None  # "en-US" / None (language neutral)
    silent_switches: str | None = None  # the manifest's Silent (or SilentWithProgress) switch
    product_code: str | None = None
    upgrade_code: str | None = None
    # AppsAndFeaturesEntries: how the installed program shows in the Uninstall registry keys.
    # Tuple of dicts with keys DisplayName, DisplayVersion, Publisher, ProductCode, UpgradeCode
    # (each optional).
    apps_and_features: tuple[dict[str, str], ...] = ()


@dataclass(frozen=True)
class PatchRecord:
    """One installable patch: a Microsoft KB, or one version of a third-party package."""

    source: str  # "msrc" | "winget" | "wsus" | "server"
    key: str  # stable identity within the catalog: "KB5034441" or "7zip.7zip@23.01"
    title: str
    vendor: str
    category: str  # one of CATEGORIES
    severity: str = "Unspecified"  # one of SEVERITIES
    restart_required: str = "May Require"  # one of RESTART_VALUES
    kb: str | None = None  # "KB5034441"
    package_id: str | None = None  # winget PackageIdentifier
    version: str | None = None  # package version for third-party patches
    release_date: dt.date | None = None
    eula_required: bool = False
    eula_url: str | None = None
    info_url: str | None = None
    description: str | None = None
    languages: tuple[str, ...] = ()  # locales the patch exists for; () means language neutral
    products: tuple[ProductRow, ...] = ()
    cves: tuple[str, ...] = ()
    installers: tuple[InstallerRecord, ...] = ()
    superseded_by: str | None = None  # key of the patch that supersedes this one, if known
    supersedes: tuple[str, ...] = ()  # keys of patches this one supersedes (all products)


@dataclass
class ParsedDocument:
    """What one upstream document (a CVRF month, a winget package) yields.

    `errors` holds one-line reasons for parts that were skipped (a bad installer entry, say);
    a document that cannot be parsed at all raises SourceError instead.
    """

    key: str  # "2024-Jan", "7zip.7zip"
    release_date: dt.date | None
    content_hash: str  # sha256 of the raw bytes, to skip unchanged documents
    patches: list[PatchRecord] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class SourceError(Exception):
    """A document or source could not be used; the message is one line, fit for a sync status."""


def one_line(exc: BaseException) -> str:
    """An exception as one short line, for a SourceError message."""
    text = " ".join(str(exc).split())
    return text[:300] or type(exc).__name__


def decompress(raw: bytes, label: str) -> bytes:
    """Upstream documents and mirrors are often kept gzipped; plain bytes pass through, and a
    truncated archive fails with one line."""
    if not raw.startswith(b"\x1f\x8b"):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{label}: corrupt gzip: {one_line(exc)}") from None


def load_json(data: bytes, label: str) -> Any:
    """JSON from an upstream: malformed, undecodable or hostilely deep input (RecursionError)
    is one SourceError line, never a traceback."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise SourceError(f"{label}: malformed JSON: {one_line(exc)}") from None
