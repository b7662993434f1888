"""NVD CVE API 2.0 records to VulnFacts (score) and AffectedRanges (CPE version ranges).

Used for every third-party package Mozilla's advisories do not cover. Quirks handled here,
measured on the real records in the shared fixtures:

- Score: NVD's own CVSS v3 (source nvd@nist.gov) when present, else the CNA's (the record's
  `sourceIdentifier`: the vendor), else the CISA ADP's; v3.1 before v3.0. Many recent records
  carry only the CNA or ADP score, so "whose score" is kept beside the number.
- Ranges: each vulnerable `cpeMatch` of an application CPE gives one range keyed
  "vendor:product" (CPE escapes removed: `notepad\\+\\+` is `notepad++`). Firefox ESR is told
  apart by the sw_edition field (`esr`) and keyed "mozilla:firefox_esr". An AND configuration
  whose platform nodes name only non-Windows systems (Linux, macOS) never matches a Windows
  install and gives no range. Records without configurations give no range.
- The online API pages with `startIndex` and is fetched incrementally with
  `lastModStartDate`/`lastModEndDate` (at most 120 days apart); see `fetch_page`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sources.records import SourceError, decompress, load_json
from sources.vulnrecords import CVE_ID, AffectedRange, VulnFacts, iso_date

if TYPE_CHECKING:
    import requests

DEFAULT_URL = "https://services.nvd.nist.gov/rest/json/cves/2.0"
NVD_SOURCE = "nvd@nist.gov"
CISA_ADP = "134c704f-9b21-4f2e-91b3-4a467353bcc0"
PAGE_SIZE = 2000
# NVD's published limits: 5 requests per 30 s without a key, 50 with one.
DELAY_WITHOUT_KEY = 6.0
DELAY_WITH_KEY = 0.6
_SPLIT = re.compile(r"(?<!\\):")
_UNESCAPE = re.compile(r"\\(.)")
_MAX_BYTES = 32 * 1024 * 1024


@dataclass
class NvdRecord:
    cve: str
    last_modified: dt.datetime | None
    status: str | None
    facts: VulnFacts
    ranges: list[AffectedRange] = field(default_factory=list)


def parse_record(obj: Any, label: str) -> NvdRecord:
    """One CVE object: the `cve` element of an API response's `vulnerabilities[]` (a fixture
    file holds exactly that); a `{"cve": {...}}` wrapper is accepted too."""
    if isinstance(obj, dict) and isinstance(obj.get("cve"), dict):
        obj = obj["cve"]
    if not isinstance(obj, dict):
        raise SourceError(f"{label}: CVE record is not an object")
    cve = obj.get("id")
    if not isinstance(cve, str) or not CVE_ID.match(cve):
        raise SourceError(f"{label}: record has no valid CVE id")
    cvss, vector, whose = _score(obj)
    facts = VulnFacts(
        cve=cve, source="nvd", cvss=cvss, vector=vector, score_source=whose,
        exploited=True if obj.get("cisaExploitAdd") else None,
        kev_date_added=iso_date(obj.get("cisaExploitAdd")),
        kev_due_date=iso_date(obj.get("cisaActionDue")),
    )
    return NvdRecord(
        cve=cve,
        last_modified=_timestamp(obj.get("lastModified")),
        status=obj.get("vulnStatus") if isinstance(obj.get("vulnStatus"), str) else None,
        facts=facts,
        ranges=_ranges(cve, obj.get("configurations")),
    )


def parse_file(raw: bytes, label: str) -> list[NvdRecord]:
    """A record file (one CVE object) or a whole API response page."""
    if len(raw) > _MAX_BYTES:
        raise SourceError(f"{label}: larger than {_MAX_BYTES} bytes")
    body = load_json(decompress(raw, label), label)
    if isinstance(body, dict) and isinstance(body.get("vulnerabilities"), list):
        return parse_page(body, label)[0]
    return [parse_record(body, label)]


def parse_page(body: Any, label: str) -> tuple[list[NvdRecord], int]:
    """Records of one API page and the result total; a bad record is skipped alone, so a page
    never fails because of one odd CVE (its error is raised only when the page has no list)."""
    if not isinstance(body, dict) or not isinstance(body.get("vulnerabilities"), list):
        raise SourceError(f"{label}: no 'vulnerabilities' list")
    records = []
    for item in body["vulnerabilities"]:
        try:
            records.append(parse_record(item, label))
        except SourceError:
            continue
    total = body.get("totalResults")
    return records, total if isinstance(total, int) else len(records)


def record_files(path: Path | str) -> list[Path]:
    """Each *.json / *.json.gz (any case) under an offline folder, in name order."""
    folder = Path(path)
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a directory")
    return sorted(
        (p for p in folder.rglob("*")
         if p.is_file() and p.name.lower().endswith((".json", ".json.gz"))),
        key=lambda p: p.name,
    )


def iter_directory(path: Path | str) -> Iterator[tuple[str, bytes]]:
    """(name, raw) of each record_files() entry."""
    for file in record_files(path):
        yield file.name, file.read_bytes()


def fetch_page(
    session: requests.Session,
    url: str,
    start_index: int,
    api_key: str | None,
    last_mod: tuple[dt.datetime, dt.datetime] | None = None,
    timeout: float = 120.0,
    match: str | None = None,
) -> bytes:
    """One page of the CVE API. The caller sleeps DELAY_WITH(OUT)_KEY between pages.
    `match` is a CPE match string (virtualMatchString) to ask only for one application."""
    params: dict[str, str | int] = {"startIndex": start_index, "resultsPerPage": PAGE_SIZE}
    if match:
        params["virtualMatchString"] = match
    if last_mod is not None:
        params["lastModStartDate"] = last_mod[0].strftime("%Y-%m-%dT%H:%M:%S.000Z")
        params["lastModEndDate"] = last_mod[1].strftime("%Y-%m-%dT%H:%M:%S.000Z")
    headers = {"apiKey": api_key} if api_key else {}
    response = session.get(url, params=params, headers=headers, timeout=timeout)
    response.raise_for_status()
    return response.content


def split_cpe(cpe: str) -> list[str]:
    return [_UNESCAPE.sub(r"\1", part) for part in _SPLIT.split(cpe)]


def _score(obj: dict[str, Any]) -> tuple[float | None, str | None, str | None]:
    metrics = obj.get("metrics") if isinstance(obj.get("metrics"), dict) else {}
    cna = obj.get("sourceIdentifier")
    best: tuple[int, float, str | None, str] | None = None
    for rank_v, name in ((1, "cvssMetricV31"), (0, "cvssMetricV30")):
        for metric in metrics.get(name) or []:
            data = metric.get("cvssData") if isinstance(metric, dict) else None
            if not isinstance(data, dict):
                continue
            score = data.get("baseScore")
            if not isinstance(score, (int, float)) or isinstance(score, bool):
                continue
            source = metric.get("source")
            whose = ("nvd" if source == NVD_SOURCE else "vendor" if source == cna
                     else "cisa-adp" if source == CISA_ADP else "other")
            rank = {"nvd": 30, "vendor": 20, "cisa-adp": 10}.get(whose, 0) + rank_v
            vector = data.get("vectorString")
            if best is None or rank > best[0]:
                best = (rank, float(score), vector if isinstance(vector, str) else None, whose)
    if best is None:
        return None, None, None
    return best[1], best[2], best[3]


def _ranges(cve: str, configurations: Any) -> list[AffectedRange]:
    out: list[AffectedRange] = []
    for config in configurations if isinstance(configurations, list) else []:
        if not isinstance(config, dict):
            continue
        nodes = [n for n in config.get("nodes") or [] if isinstance(n, dict)]
        matches = [m for n in nodes for m in n.get("cpeMatch") or [] if isinstance(m, dict)]
        if config.get("operator") == "AND" and not _runs_on_windows(matches):
            continue
        for match in matches:
            criteria = match.get("criteria")
            if not match.get("vulnerable") or not isinstance(criteria, str):
                continue
            parts = split_cpe(criteria)
            if len(parts) < 6 or parts[2] != "a":
                continue
            vendor, product, version = parts[3], parts[4], parts[5]
            if len(parts) > 9 and parts[9] == "esr" and not product.endswith("_esr"):
                product += "_esr"
            update = parts[6] if len(parts) > 6 else "*"
            exact = None
            if version not in ("*", "-", ""):
                exact = version if update in ("*", "-", "") else f"{version}:{update}"
            out.append(AffectedRange(
                cve=cve, source="nvd", package=f"{vendor}:{product}".lower(),
                start_including=_text(match.get("versionStartIncluding")),
                start_excluding=_text(match.get("versionStartExcluding")),
                end_excluding=_text(match.get("versionEndExcluding")),
                end_including=_text(match.get("versionEndIncluding")),
                exact=exact,
            ))
    return out


def _runs_on_windows(matches: list[dict[str, Any]]) -> bool:
    """False when the platform (non-vulnerable OS CPEs) of an AND configuration is only
    systems other than Windows."""
    systems = [split_cpe(m["criteria"]) for m in matches
               if not m.get("vulnerable") and isinstance(m.get("criteria"), str)]
    systems = [p for p in systems if len(p) > 4 and p[2] == "o"]
    return not systems or any(p[3] == "microsoft" and p[4].startswith("windows") for p in systems)


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None


def _timestamp(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        stamp = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)
