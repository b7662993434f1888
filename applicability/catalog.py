"""Catalog frames from parsed patch records (sources.msrc / sources.winget output).

The database loader builds the same frames from stored rows; these helpers build them straight
from parser output for tests, benchmarks and offline use, and fix two choices the loader must
share:

- MSRC: one patch per KB across monthly documents (a KB is revised in later months), one row
  per (KB, product) with the first FixedBuild/supersedence seen, and the earliest release date.
  A version-only fix (Edge, no KB) is one patch per record key, with kb NA.
- winget: an installer that lists several AppsAndFeaturesEntries may list companions besides
  the program itself (Firefox's "Mozilla Maintenance Service", whose stale version would be
  reported as an outdated Firefox); only the entries whose name is closest to the package name
  are kept for matching.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

from applicability.frames import make_frame
from applicability.names import normalize_name
from sources.filters import package_name
from sources.records import InstallerRecord, PatchRecord


def ms_catalog_from_records(patches: Iterable[PatchRecord], first_id: int = 1) -> pd.DataFrame:
    """ms_catalog frame; patch ids are assigned per KB in order of first appearance."""
    ids: dict[str, int] = {}
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for p in patches:
        key = p.kb or (p.key if p.source == "msrc" and p.key.startswith("msrc:") else None)
        if not key:
            continue
        pid = ids.setdefault(key, first_id + len(ids))
        date = pd.Timestamp(p.release_date) if p.release_date else pd.NaT
        for prod in p.products:
            row = rows.get((key, prod.name))
            if row is None:
                rows[(key, prod.name)] = {
                    "patch_id": pid,
                    "kb": p.kb,
                    "product": prod.name,
                    "fixed_build": prod.fixed_build,
                    "supersedes_kb": prod.supersedes,
                    "subtype": prod.subtype,
                    "severity": prod.severity,
                    "release_date": date,
                }
                continue
            row["fixed_build"] = row["fixed_build"] or prod.fixed_build
            row["supersedes_kb"] = row["supersedes_kb"] or prod.supersedes
            row["subtype"] = row["subtype"] or prod.subtype
            if date is not pd.NaT and (row["release_date"] is pd.NaT or date < row["release_date"]):
                row["release_date"] = date
    return make_frame("ms_catalog", list(rows.values()))


def _own_entries(inst: InstallerRecord, name: str) -> list[dict[str, str]]:
    """The AppsAndFeaturesEntries describing the package itself (see the module docstring)."""
    entries = list(inst.apps_and_features)
    if len(entries) < 2:
        return entries
    target = set(normalize_name(name).split())

    def score(e: dict[str, str]) -> float:
        words = set(normalize_name(e.get("DisplayName", "")).split())
        return len(words & target) / len(words | target) if words | target else 0.0

    best = max(score(e) for e in entries)
    return [e for e in entries if score(e) == best] if best > 0 else entries


def app_catalog_from_records(patches: Iterable[PatchRecord], first_id: int = 1) -> pd.DataFrame:
    """app_catalog frame: one row per (package version, installer architecture)."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    pid = first_id - 1
    for p in patches:
        if not p.package_id or not p.version:
            continue
        pid += 1
        name = package_name(p.title, p.version)
        for inst in p.installers:
            row = rows.setdefault(
                (pid, inst.arch),
                {
                    "patch_id": pid,
                    "package_id": p.package_id,
                    "package_name": name,
                    "publisher": p.vendor,
                    "version": p.version,
                    "arch": inst.arch,
                    "product_codes": [],
                    "upgrade_codes": [],
                    "display_names": [],
                },
            )
            entries = _own_entries(inst, name)
            own_codes = {e.get("ProductCode") for e in entries}
            if inst.product_code and (
                len(inst.apps_and_features) < 2 or inst.product_code in own_codes
            ):
                row["product_codes"].append(inst.product_code)
            if inst.upgrade_code:
                row["upgrade_codes"].append(inst.upgrade_code)
            for e in entries:
                for key, col in (
                    ("ProductCode", "product_codes"),
                    ("UpgradeCode", "upgrade_codes"),
                    ("DisplayName", "display_names"),
                ):
                    if e.get(key) and e[key] not in row[col]:
                        row[col].append(e[key])
    for row in rows.values():
        for col in ("product_codes", "upgrade_codes"):
            row[col] = list(dict.fromkeys(row[col]))
    return make_frame("app_catalog", list(rows.values()))
