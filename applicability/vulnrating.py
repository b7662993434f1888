"""Per-pair vulnerability rating: which CVEs a missing third-party patch fixes on an endpoint,
how severe the pair is, and a risk score to order "what do I patch first".

Pure functions over plain records (sources.vulnrecords); the database and the scan call them.

The rule (docs/vulnerabilities.md says the same):
- For a missing pair (installed version I of a package, patch version V), the pair's CVEs are
  those with a range of the package's key (its CPE vendor:product; for Mozilla also the MFSA
  ranges) that contains I, while no range of that CVE contains V and V is at or past the
  range's end: "affects I and is fixed at or below V". ESR branches are kept apart: when a CVE
  has a range for I's major version (an ESR branch), only those ranges count for I.
- Severity: the highest vendor rating among those CVEs (Mozilla critical/high/moderate/low ->
  Critical/Important/Moderate/Low); else from the highest CVSS v3 base score (>= 9.0
  Critical, 7.0-8.9 Important, 4.0-6.9 Moderate, 0.1-3.9 Low); else Unspecified, with the
  reason.
- Risk 0-100: CVSS x 5 (0-50; without a score, the severity's midpoint: Critical 45, Important
  35, Moderate 20, Low 5) + 30 when a CVE is exploited (KEV, MSRC Exploited:Yes, NVD's CISA
  fields) + 10 when a KEV due date has passed + up to 10 for how long the pair has been missing
  (1 point per 9 days), capped at 100.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sources.records import severity_rank
from sources.versions import compare_versions
from sources.vulnrecords import AffectedRange, VulnFacts

VENDOR_SEVERITY = {"critical": "Critical", "high": "Important", "moderate": "Moderate",
                   "low": "Low"}
_SEVERITY_POINTS = {"Critical": 45, "Important": 35, "Moderate": 20, "Low": 5}
_VENDOR_NAMES = {"mozilla": "Mozilla", "msrc": "Microsoft"}


@dataclass(frozen=True)
class CveView:
    """Everything the feeds say about one CVE, merged."""

    cve: str
    cvss: float | None = None
    vector: str | None = None
    score_source: str | None = None  # vendor | nvd | cisa-adp
    vendor_rating: str | None = None
    rated_by: str | None = None  # "Mozilla"
    exploited: bool = False
    kev: bool = False
    kev_date_added: dt.date | None = None
    kev_due_date: dt.date | None = None

    def as_json(self) -> dict[str, object]:
        return {"cve": self.cve, "cvss": self.cvss, "score_source": self.score_source,
                "vendor_rating": self.vendor_rating, "exploited": self.exploited,
                "kev": self.kev,
                "kev_due_date": self.kev_due_date.isoformat() if self.kev_due_date else None}


@dataclass(frozen=True)
class PairRating:
    severity: str
    cves: tuple[str, ...] = ()
    cvss: float | None = None
    exploited: bool = False
    kev_due_date: dt.date | None = None  # the earliest among the pair's KEV CVEs
    risk: int = 0
    explain: str = ""
    details: tuple[CveView, ...] = field(default=(), compare=False)


def merge_facts(facts: Iterable[VulnFacts]) -> dict[str, CveView]:
    """One view per CVE. Score: MSRC's (the vendor's, for Microsoft CVEs), else the NVD
    record's (which already prefers NVD's own score over the CNA's and CISA's). Exploited:
    any feed saying so. KEV: the catalog's dates, else the ones NVD copies."""
    by_cve: dict[str, dict[str, VulnFacts]] = defaultdict(dict)
    for item in facts:
        by_cve[item.cve][item.source] = item
    out = {}
    for cve, sources in by_cve.items():
        scored = next((sources[s] for s in ("msrc", "nvd", "mozilla")
                       if s in sources and sources[s].cvss is not None), None)
        rated = next((s for s in ("mozilla", "msrc") if s in sources
                      and sources[s].vendor_rating in VENDOR_SEVERITY), None)
        kev_row = sources.get("kev")
        nvd = sources.get("nvd")
        kev_source = kev_row if kev_row is not None else (
            nvd if nvd is not None and nvd.kev_due_date is not None else None)
        out[cve] = CveView(
            cve=cve,
            cvss=scored.cvss if scored else None,
            vector=scored.vector if scored else None,
            score_source=scored.score_source if scored else None,
            vendor_rating=sources[rated].vendor_rating if rated else None,
            rated_by=_VENDOR_NAMES.get(rated or ""),
            exploited=any(f.exploited for f in sources.values()),
            kev=kev_source is not None,
            kev_date_added=kev_source.kev_date_added if kev_source else None,
            kev_due_date=kev_source.kev_due_date if kev_source else None,
        )
    return out


def affects(rng: AffectedRange, version: str) -> bool:
    """Whether `version` is inside the range (bounds as NVD means them)."""
    if rng.branch is not None and _major(version) != rng.branch:
        return False
    if rng.exact is not None:
        return ":" not in rng.exact and compare_versions(version, rng.exact) == 0
    if rng.start_including and compare_versions(version, rng.start_including) < 0:
        return False
    if rng.start_excluding and compare_versions(version, rng.start_excluding) <= 0:
        return False
    if rng.end_excluding and compare_versions(version, rng.end_excluding) >= 0:
        return False
    return not (rng.end_including and compare_versions(version, rng.end_including) > 0)


def _past(rng: AffectedRange, version: str) -> bool:
    """`version` is at or beyond the range's end: the range's fix is at or below it."""
    if rng.exact is not None:
        return ":" not in rng.exact and compare_versions(version, rng.exact) > 0
    if rng.end_excluding:
        return compare_versions(version, rng.end_excluding) >= 0
    if rng.end_including:
        return compare_versions(version, rng.end_including) > 0
    return False  # open-ended: no fix known


def pair_cves(ranges: Iterable[AffectedRange], installed: str, patch_version: str,
              ) -> list[tuple[str, AffectedRange]]:
    """(CVE, the range that puts `installed` in it) for each CVE of the package's ranges that
    affects `installed` and is fixed at or below `patch_version`."""
    by_cve: dict[str, list[AffectedRange]] = defaultdict(list)
    for rng in ranges:
        by_cve[rng.cve].append(rng)
    major = _major(installed)
    out = []
    for cve, cve_ranges in sorted(by_cve.items()):
        branch = [r for r in cve_ranges if r.branch == major]
        candidates = branch or [r for r in cve_ranges if r.branch is None]
        hit = next((r for r in candidates if affects(r, installed)), None)
        if hit is None or not _past(hit, patch_version):
            continue
        if any(affects(r, patch_version) for r in cve_ranges):
            continue
        out.append((cve, hit))
    return out


def rate_pair(
    package_key: str | None,
    ranges: Iterable[AffectedRange],
    views: Mapping[str, CveView],
    installed: str | None,
    patch_version: str | None,
    product: str,
    today: dt.date,
    missing_since: dt.date | None = None,
) -> PairRating:
    """The pair's severity, CVEs, CVSS, exploited, earliest KEV due date, risk and explanation.
    `package_key` None means the package has no CPE mapping."""
    # Versions come out of pandas frames, where an unknown one is NaN (truthy, not a str).
    installed = installed if isinstance(installed, str) and installed.strip() else None
    patch_version = patch_version if isinstance(patch_version, str) and patch_version.strip() \
        else None
    age = _age_points(missing_since, today)
    if package_key is None:
        return PairRating("Unspecified", risk=age,
                          explain=f"Unspecified: no CPE mapping for {product} "
                                  "(patchflow feeds cpe set)")
    if not installed or not patch_version:
        return PairRating("Unspecified", risk=age,
                          explain="Unspecified: installed or patch version unknown")
    hits = pair_cves(ranges, installed, patch_version)
    if not hits:
        return PairRating("Unspecified", risk=age,
                          explain=f"Unspecified: no known CVE of {package_key} affects "
                                  f"installed {installed} and is fixed at or below "
                                  f"{patch_version}")
    details = tuple(views.get(cve) or CveView(cve=cve) for cve, _ in hits)
    fixed_text = {cve: rng.fixed_in or (f"{product} {rng.end_excluding}"
                                        if rng.end_excluding else None) for cve, rng in hits}
    rated = [d for d in details if d.vendor_rating in VENDOR_SEVERITY]
    scores = [d.cvss for d in details if d.cvss is not None]
    cvss = max(scores) if scores else None
    if rated:
        top = max(rated, key=lambda d: (severity_rank(VENDOR_SEVERITY[d.vendor_rating or ""]),
                                        d.cvss or 0))
        severity = VENDOR_SEVERITY[top.vendor_rating or ""]
        why = f"{top.cve} ({top.rated_by or 'vendor'}: {top.vendor_rating})"
    elif cvss is not None and cvss >= 0.1:
        top = max((d for d in details if d.cvss is not None), key=lambda d: d.cvss or 0)
        severity = cvss_severity(cvss)
        why = f"{top.cve} (CVSS {cvss:g}, {top.score_source or 'unknown source'})"
    else:
        return PairRating("Unspecified", cves=tuple(d.cve for d in details), risk=age,
                          details=details,
                          explain=f"Unspecified: {len(details)} CVEs affect installed "
                                  f"{installed} but no feed rates or scores them")
    fixed = fixed_text.get(top.cve)
    explain = f"{severity}: {why}" + (f", fixed in {fixed}" if fixed else "") + \
        f"; installed {installed}"
    if len(details) > 1:
        explain += f" (+{len(details) - 1} more CVEs)"
    exploited = any(d.exploited for d in details)
    due = min((d.kev_due_date for d in details if d.kev_due_date), default=None)
    return PairRating(
        severity=severity, cves=tuple(d.cve for d in details), cvss=cvss, exploited=exploited,
        kev_due_date=due, explain=explain, details=details,
        risk=risk_score(severity, cvss, exploited, due, today, missing_since),
    )


def cvss_severity(cvss: float | None) -> str:
    if cvss is None or cvss < 0.1:
        return "Unspecified"
    if cvss >= 9.0:
        return "Critical"
    if cvss >= 7.0:
        return "Important"
    if cvss >= 4.0:
        return "Moderate"
    return "Low"


def risk_score(severity: str, cvss: float | None, exploited: bool, kev_due: dt.date | None,
               today: dt.date, missing_since: dt.date | None = None) -> int:
    """0-100, see the module docstring: severity of the flaw, then whether it is exploited and
    overdue, then how long it has been left open."""
    base = cvss * 5 if cvss is not None else _SEVERITY_POINTS.get(severity, 0)
    score = base + (30 if exploited else 0)
    if kev_due is not None and kev_due < today:
        score += 10
    score += _age_points(missing_since, today)
    return int(min(100, round(score)))


def _age_points(missing_since: dt.date | None, today: dt.date) -> int:
    if missing_since is None:
        return 0
    return max(0, min(10, (today - missing_since).days // 9))


def _major(version: str) -> str:
    head = (version or "").strip().split(".", 1)[0]
    return str(int(head)) if head.isdigit() else head
