"""Vulnerability facts for the catalog and the scan results: the database side of
applicability.vulnrating.

`load_intel` reads the feeds once (merged CVE views, ranges per package key, the CPE mapping);
`enrich_missing` adds the pair columns (cves, cvss, exploited, kev_due_date, risk) to a
missing-patches frame and gives third-party pairs their rated severity; `patch_vulnerabilities`
is what `patches show` lists. Microsoft patches keep MSRC's severity; their CVSS and exploited
come from the CVEs the KB fixes (patch_cves).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from dataclasses import dataclass, fields, replace
from typing import Any

import pandas as pd
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from applicability.vulnrating import (
    CveView,
    PairRating,
    merge_facts,
    pair_cves,
    rate_pair,
    risk_score,
)
from models import (
    MissingPatch,
    Patch,
    PatchCve,
    PatchVulnerability,
    Vulnerability,
    VulnerabilityRange,
)
from patchflow.catalog import vulnfeeds
from patchflow.scanning.missing_query import MissingFilters, load_missing, not_declined
from reports.frames import SEVERITIES, severity_rank
from sources.versions import version_key
from sources.vulnrecords import AffectedRange, VulnFacts

PAIR_COLUMNS = ("cves", "cvss", "exploited", "kev_due_date", "risk", "rating")


@dataclass
class Intel:
    views: dict[str, CveView]
    ranges: dict[str, list[AffectedRange]]  # package key -> ranges
    cpe: dict[str, str]  # winget PackageIdentifier -> package key


def load_intel(session: Session, cves: set[str] | None = None) -> Intel:
    """The feeds' facts (all, or those of `cves` plus every CVE with a range) and ranges."""
    # Plain rows, not ORM objects: building ~10,000 instances cost seconds (bench/feeds.py).
    range_fields = [f.name for f in fields(AffectedRange)]
    ranges: dict[str, list[AffectedRange]] = defaultdict(list)
    for row in session.execute(
            select(*(getattr(VulnerabilityRange, f) for f in range_fields))):
        rng = AffectedRange(*row)
        ranges[rng.package].append(rng)
    columns = [getattr(Vulnerability, f.name) for f in fields(VulnFacts)]
    if cves is None:
        facts = [VulnFacts(*row) for row in session.execute(select(*columns))]
    else:
        wanted = sorted(cves | {r.cve for group in ranges.values() for r in group})
        facts = []
        for start in range(0, len(wanted), 2000):
            facts += [VulnFacts(*row) for row in session.execute(
                select(*columns).where(Vulnerability.cve.in_(wanted[start:start + 2000])))]
    return Intel(views=merge_facts(facts), ranges=dict(ranges), cpe=vulnfeeds.cpe_for(session))


def rate(intel: Intel, package_id: str, product: str, installed: str | None,
         version: str | None, today: dt.date, since: dt.date | None = None) -> PairRating:
    key = intel.cpe.get(package_id)
    return rate_pair(key, intel.ranges.get(key or "", []), intel.views, installed, version,
                     product, today, since)


def pair_severity(rating: PairRating, stored: str | None) -> str:
    """A third-party pair's severity: its CVEs' rating; with no CVE known for the pair, the
    catalog's own severity (an upstream's rating, or Unspecified) stands."""
    return rating.severity if rating.cves else stored or "Unspecified"


def microsoft_cves(session: Session, patch_ids: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for start in range(0, len(patch_ids), 5000):
        rows = session.execute(select(PatchCve.patch_id, PatchCve.cve).where(
            PatchCve.patch_id.in_(patch_ids[start:start + 5000])))
        for patch_id, cve in rows:
            out[patch_id].append(cve)
    return out


def enrich_missing(session: Session, frame: pd.DataFrame,
                   today: dt.date | None = None) -> pd.DataFrame:
    """The frame with PAIR_COLUMNS added; third-party rows get the pair's severity."""
    today = today or dt.datetime.now(dt.UTC).date()
    frame = frame.copy()
    if frame.empty:
        for column in PAIR_COLUMNS:
            frame[column] = pd.Series(dtype=object)
        return frame
    ms_ids = frame.loc[frame["package_id"].isna(), "patch_id"].unique().tolist()
    ms_cves = microsoft_cves(session, [int(i) for i in ms_ids])
    intel = load_intel(session, {c for cves in ms_cves.values() for c in cves})
    ms = {pid: [intel.views.get(c) or CveView(cve=c) for c in cves]
          for pid, cves in ms_cves.items()}
    cache: dict[tuple[Any, ...], PairRating] = {}
    values: dict[str, list[Any]] = {c: [] for c in (*PAIR_COLUMNS, "severity")}
    for row in frame[["patch_id", "package_id", "product", "title", "installed_version",
                      "available_version", "detected_at", "severity"]].itertuples(index=False):
        since = _day(row.detected_at)
        if isinstance(row.package_id, str):
            key = (row.package_id, row.installed_version, row.available_version)
            rating = cache.get(key)
            if rating is None:
                rating = cache[key] = rate(intel, row.package_id, row.product or row.title,
                                           row.installed_version, row.available_version, today)
            risk = risk_score(rating.severity, rating.cvss, rating.exploited,
                              rating.kev_due_date, today, since) if rating.cves else \
                risk_score("Unspecified", None, False, None, today, since)
            _append(values, list(rating.cves), rating.cvss, rating.exploited,
                    rating.kev_due_date, risk, rating.explain,
                    pair_severity(rating, row.severity))
        else:
            views = ms.get(int(row.patch_id), [])
            scores = [v.cvss for v in views if v.cvss is not None]
            cvss = max(scores) if scores else None
            exploited = any(v.exploited for v in views)
            due = min((v.kev_due_date for v in views if v.kev_due_date), default=None)
            risk = risk_score(row.severity, cvss, exploited, due, today, since)
            _append(values, sorted(v.cve for v in views), cvss, exploited, due, risk, None,
                    row.severity)
    for column, column_values in values.items():
        frame[column] = column_values
    return frame


def load_rated_missing(session: Session, filters: MissingFilters,
                       include_declined: bool = False) -> pd.DataFrame:
    """Missing pairs with the pair columns. A third-party pair's severity is rated per pair, so
    the severity filter applies after the rating: every view that lists missing pairs by
    severity (CLI, reports) goes through here and lists the same pairs."""
    filters = filters.normalized()
    unrated = replace(filters, severity=(), exploited=False)
    frame = enrich_missing(session, load_missing(session, unrated,
                                                 include_declined=include_declined))
    if filters.severity:
        frame = frame[frame["severity"].isin(filters.severity)].reset_index(drop=True)
    if filters.exploited:
        frame = frame[frame["exploited"].astype(bool)].reset_index(drop=True)
    return frame


def patch_rollup(frame: pd.DataFrame) -> pd.DataFrame:
    """Per patch_id, from rated pairs: what a one-row-per-patch view (Patch Install) shows.

    A third-party patch's pairs can rate differently (Firefox 128 and 138 both missing 140):
    the patch shows the worst of them, the union of their CVEs, the highest CVSS and risk,
    exploited when any pair is, and the earliest KEV due date. Microsoft pairs of one KB all
    rate alike, so for them this is the pair's rating.
    """
    columns = ["patch_id", "severity", "cves", "cvss", "exploited", "kev_due_date", "risk"]
    if frame.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    rank = severity_rank(frame["severity"])
    worst = frame.assign(_r=rank).sort_values("_r", kind="stable").drop_duplicates("patch_id")
    grouped = frame.groupby("patch_id", sort=False)
    out = pd.DataFrame({
        "severity": worst.set_index("patch_id")["severity"],
        "cves": grouped["cves"].agg(lambda lists: sorted({c for cves in lists for c in cves})),
        "cvss": grouped["cvss"].max(),
        "exploited": grouped["exploited"].any(),
        "kev_due_date": grouped["kev_due_date"].min(),
        "risk": grouped["risk"].max(),
    })
    out["cvss"] = out["cvss"].astype("object").where(out["cvss"].notna(), None)
    out["kev_due_date"] = out["kev_due_date"].astype("object").where(
        out["kev_due_date"].notna(), None)
    return out.rename_axis("patch_id").reset_index()[columns]


def _append(values: dict[str, list[Any]], cves: list[str], cvss: float | None,
            exploited: bool, due: dt.date | None, risk: int, rating: str | None,
            severity: str) -> None:
    values["cves"].append(cves)
    values["cvss"].append(cvss)
    values["exploited"].append(bool(exploited))
    values["kev_due_date"].append(due.isoformat() if due else None)
    values["risk"].append(int(risk))
    values["rating"].append(rating)
    values["severity"].append(severity)


def _day(value: Any) -> dt.date | None:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return None
    return None if pd.isna(stamp) else stamp.date()


def patch_vulnerabilities(session: Session, patch: Patch) -> dict[str, Any]:
    """`vulnerabilities`, `cvss_max`, `exploited` for `patches show`. A third-party version's
    CVEs are those it fixes over the previous catalog version of the package (all fixed at or
    below it for the oldest); a KB's are the CVEs MSRC lists for it."""
    intel = load_intel(session)
    if patch.package_id:
        key = intel.cpe.get(patch.package_id)
        ranges = intel.ranges.get(key or "", [])
        cves = sorted(fixed_by_version(session, patch, ranges)) if key else []
    else:
        cves = sorted(c.cve for c in patch.cves)
    views = [intel.views.get(c) or CveView(cve=c) for c in cves]
    scores = [v.cvss for v in views if v.cvss is not None]
    return {
        "vulnerabilities": [v.as_json() for v in views],
        "cvss_max": max(scores) if scores else None,
        "exploited": any(v.exploited for v in views),
    }


def fixed_by_version(session: Session, patch: Patch, ranges: list[AffectedRange]) -> set[str]:
    versions = [v for (v,) in session.execute(
        select(Patch.version).where(Patch.package_id == patch.package_id,
                                    Patch.version.is_not(None)))]
    if not patch.version:
        return set()
    older = [v for v in versions if version_key(v) < version_key(patch.version)]
    if older:
        previous = max(older, key=version_key)
        return {cve for cve, _ in pair_cves(ranges, previous, patch.version)}
    # The oldest version held: every CVE of the package whose fix is at or below it.
    return {cve for cve, _ in pair_cves(ranges, "0", patch.version)}


def dashboard_ratings(session: Session, today: dt.date | None = None
                      ) -> tuple[dict[str, Any], pd.DataFrame]:
    """One pass over the current missing pairs (declined patches left out) for the dashboard:
    `exploited: {"patches", "pairs"}` and `overdue_kev` (pairs with a KEV CVE whose due date
    has passed), and the third-party pairs by their rated severity (severity, patches, pairs;
    a patch counts under its worst pair), since the catalog holds no severity for them.
    Microsoft pairs through their KB's CVEs, in SQL; third-party pairs rated per distinct
    (package, installed, available)."""
    today = today or dt.datetime.now(dt.UTC).date()
    intel = load_intel(session)
    exploited_patches: set[int] = set()
    pairs = overdue = 0
    ms_rows = session.execute(
        select(MissingPatch.patch_id, PatchCve.cve)
        .join(Patch, Patch.id == MissingPatch.patch_id)
        .join(PatchCve, PatchCve.patch_id == MissingPatch.patch_id)
        .where(Patch.package_id.is_(None), not_declined())
        .join(Vulnerability, Vulnerability.cve == PatchCve.cve)
        .distinct())
    flags: dict[int, tuple[bool, bool]] = {}
    for patch_id, cve in ms_rows:
        view = intel.views.get(cve)
        if view is None:
            continue
        was = flags.get(patch_id, (False, False))
        late = view.kev_due_date is not None and view.kev_due_date < today
        flags[patch_id] = (was[0] or view.exploited, was[1] or late)
    if flags:
        ids = list(flags)
        for start in range(0, len(ids), 5000):
            chunk = ids[start:start + 5000]
            for patch_id, count in session.execute(
                    select(MissingPatch.patch_id, func.count()).where(
                        MissingPatch.patch_id.in_(chunk)).group_by(MissingPatch.patch_id)):
                exploited, late = flags[patch_id]
                if exploited:
                    exploited_patches.add(patch_id)
                    pairs += count
                if late:
                    overdue += count
    cache: dict[tuple[Any, ...], PairRating] = {}
    by_patch: dict[int, Counter[str]] = defaultdict(Counter)
    third = session.execute(
        select(MissingPatch.patch_id, Patch.package_id, MissingPatch.product, Patch.title,
               MissingPatch.installed_version, MissingPatch.available_version, Patch.version,
               Patch.severity)
        .join(Patch, Patch.id == MissingPatch.patch_id)
        .where(Patch.package_id.is_not(None), not_declined()))
    for patch_id, package_id, product, title, installed, available, version, stored in third:
        key = (package_id, installed, available or version)
        rating = cache.get(key)
        if rating is None:
            rating = cache[key] = rate(intel, package_id, product or title, installed,
                                       available or version, today)
        by_patch[patch_id][pair_severity(rating, stored)] += 1
        if rating.exploited:
            exploited_patches.add(patch_id)
            pairs += 1
        if rating.kev_due_date is not None and rating.kev_due_date < today:
            overdue += 1
    counts = {"exploited": {"patches": len(exploited_patches), "pairs": pairs},
              "overdue_kev": overdue}
    return counts, _severity_counts(by_patch)


def _severity_counts(by_patch: dict[int, Counter[str]]) -> pd.DataFrame:
    order = {name: rank for rank, name in enumerate(SEVERITIES)}
    patches: Counter[str] = Counter()
    pairs: Counter[str] = Counter()
    for per_severity in by_patch.values():
        pairs.update(per_severity)
        patches[min(per_severity, key=lambda name: order.get(name, len(order)))] += 1
    return pd.DataFrame({"severity": list(pairs),
                         "patches": [patches[name] for name in pairs],
                         "pairs": [pairs[name] for name in pairs]},
                        columns=["severity", "patches", "pairs"])


def relink_patches(session: Session) -> int:
    """Refill patch_vulnerabilities: each third-party patch and the CVEs it fixes (as
    `patch_vulnerabilities` computes them), for SQL readers such as reports. Returns the links."""
    intel = load_intel(session)
    session.execute(delete(PatchVulnerability))
    links = 0
    for patch in session.scalars(select(Patch).where(Patch.package_id.is_not(None))):
        key = intel.cpe.get(patch.package_id or "")
        if not key:
            continue
        for cve in sorted(fixed_by_version(session, patch, intel.ranges.get(key, []))):
            session.add(PatchVulnerability(patch_id=patch.id, cve=cve))
            links += 1
    return links
