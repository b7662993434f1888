"""Normalized vulnerability facts shared by the feed parsers (KEV, Mozilla, NVD, MSRC).

Each feed says something different about a CVE: KEV that it is exploited and by when to fix it,
Mozilla and NVD which versions of which application it affects, MSRC and NVD how bad it is.
The parsers return these plain, frozen records so storage and the per-pair rating never depend
on a feed's document shape.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

CVE_ID = re.compile(r"^CVE-\d{4}-\d{4,19}$")
VENDOR_RATINGS = ("critical", "high", "moderate", "low")


@dataclass(frozen=True)
class VulnFacts:
    """What one feed knows about one CVE; None means "this feed does not say"."""

    cve: str
    source: str  # "nvd" | "mozilla" | "msrc" | "kev"
    cvss: float | None = None  # CVSS v3 base score
    vector: str | None = None
    score_source: str | None = None  # whose score: "vendor" (the CNA / MSRC) or "nvd"
    vendor_rating: str | None = None  # Mozilla critical/high/moderate/low
    exploited: bool | None = None
    publicly_disclosed: bool | None = None
    kev_date_added: dt.date | None = None
    kev_due_date: dt.date | None = None
    kev_ransomware: bool | None = None


@dataclass(frozen=True)
class AffectedRange:
    """A version range of one application that a CVE affects.

    `package` is the key the rating matches installs against: a CPE "vendor:product" for NVD,
    "mozilla:firefox", "mozilla:firefox_esr" or "mozilla:thunderbird" for Mozilla advisories.
    `branch` is set for ESR ranges: the range then only applies to installs of that major
    version, which keeps release and ESR trains apart.
    """

    cve: str
    source: str
    package: str
    start_including: str | None = None
    start_excluding: str | None = None
    end_excluding: str | None = None  # the first fixed version, when the feed gives it
    end_including: str | None = None
    exact: str | None = None
    branch: str | None = None
    fixed_in: str | None = None  # the text the advisory shows ("Firefox 138.0.4")


def iso_date(value: object) -> dt.date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        return None
