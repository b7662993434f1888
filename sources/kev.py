"""CISA's Known Exploited Vulnerabilities catalog (JSON, possibly gzip) to VulnFacts.

KEV is the strongest "patch this first" signal there is: a CVE in it is exploited in the wild
and US agencies must fix it by its due date. The catalog is one document; an entry that is not
an object or has no valid CVE ID is skipped with a one-line error, the rest is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sources.records import SourceError, decompress, load_json
from sources.vulnrecords import CVE_ID, VulnFacts, iso_date

if TYPE_CHECKING:
    import requests

DEFAULT_URL = (
    "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json"
)


@dataclass
class KevCatalog:
    version: str | None
    entries: list[VulnFacts] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def parse_kev(raw: bytes, label: str = "KEV catalog") -> KevCatalog:
    body = load_json(decompress(raw, label), label)
    items = body.get("vulnerabilities") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise SourceError(f"{label}: no 'vulnerabilities' list")
    version = body.get("catalogVersion")
    catalog = KevCatalog(version=version if isinstance(version, str) else None)
    bad = 0
    for item in items:
        cve = item.get("cveID") if isinstance(item, dict) else None
        if not isinstance(cve, str) or not CVE_ID.match(cve.strip()):
            bad += 1
            continue
        ransomware = item.get("knownRansomwareCampaignUse")
        catalog.entries.append(VulnFacts(
            cve=cve.strip(),
            source="kev",
            exploited=True,
            kev_date_added=iso_date(item.get("dateAdded")),
            kev_due_date=iso_date(item.get("dueDate")),
            kev_ransomware=(ransomware.strip().lower() == "known")
            if isinstance(ransomware, str) else None,
        ))
    if bad:
        catalog.errors.append(f"{label}: {bad} entries without a valid cveID skipped")
    return catalog


def fetch_kev(session: requests.Session, url: str = DEFAULT_URL, timeout: float = 120.0) -> bytes:
    response = session.get(url, timeout=timeout)
    response.raise_for_status()
    return response.content
