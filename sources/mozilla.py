"""Mozilla security advisories (foundation-security-advisories YAML, one file per MFSA).

An advisory lists where it was fixed (`fixed_in: [Firefox 138.0.4, Firefox ESR 128.8.1]`) and
an impact per CVE. Firefox release and Firefox ESR are different packages on Windows
(Mozilla.Firefox and Mozilla.Firefox.ESR), so their ranges get different package keys; an ESR
range also carries its branch (the major version) so a fix on ESR 128 never rates ESR 115.
Thunderbird ships its ESR and release trains under one package; its ESR fixes (said by the
title, or a lower major next to a higher one in the same advisory) carry the branch, and the
rating prefers a branch range that matches the installed major over a release range.

Products that do not run on Windows (Firefox for iOS, Focus, Mozilla VPN for macOS) give no
ranges. A file that is not YAML, or has no `advisories` mapping, fails alone with one line.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sources.records import SourceError, one_line
from sources.safe_yaml import safe_load
from sources.vulnrecords import CVE_ID, VENDOR_RATINGS, AffectedRange, VulnFacts

FIREFOX = "mozilla:firefox"
FIREFOX_ESR = "mozilla:firefox_esr"
THUNDERBIRD = "mozilla:thunderbird"
_FIXED_IN = re.compile(
    r"^\s*(Firefox ESR|Firefox|Thunderbird ESR|Thunderbird)\s+(\d+(?:\.\d+)*)\s*$"
)
_FILE_NAME = re.compile(r"^mfsa\d{4}-\d+\.ya?ml$", re.IGNORECASE)
_MAX_BYTES = 4 * 1024 * 1024  # the largest real advisory is a few KB


@dataclass
class MozillaAdvisory:
    key: str  # "mfsa2025-36"
    announced: dt.date | None
    impact: str | None
    fixed_in: tuple[str, ...]
    facts: list[VulnFacts] = field(default_factory=list)
    ranges: list[AffectedRange] = field(default_factory=list)


def parse_advisory(raw: bytes, key: str) -> MozillaAdvisory:
    """Parse one MFSA file; `key` is its name without the suffix ("mfsa2025-36")."""
    if len(raw) > _MAX_BYTES:
        raise SourceError(f"{key}: advisory larger than {_MAX_BYTES} bytes")
    try:
        body = safe_load(raw)
    except yaml.YAMLError as exc:
        raise SourceError(f"{key}: malformed YAML: {one_line(exc)}") from None
    except (UnicodeDecodeError, RecursionError) as exc:
        raise SourceError(f"{key}: unreadable YAML: {one_line(exc)}") from None
    if not isinstance(body, dict) or not isinstance(body.get("advisories"), dict):
        raise SourceError(f"{key}: no 'advisories' mapping")
    title = body.get("title") if isinstance(body.get("title"), str) else ""
    fixed = [str(x).strip() for x in body.get("fixed_in") or [] if isinstance(x, (str, int, float))]
    ranges_for = _fixed_ranges(fixed, title)
    impact = _rating(body.get("impact"))
    advisory = MozillaAdvisory(
        key=key,
        announced=_announced(body.get("announced")),
        impact=impact,
        fixed_in=tuple(fixed),
    )
    for cve, entry in body["advisories"].items():
        if not isinstance(cve, str) or not CVE_ID.match(cve.strip()):
            continue  # MFSA-internal identifiers: nothing to match against NVD or KEV
        cve = cve.strip()
        rating = _rating(entry.get("impact")) if isinstance(entry, dict) else None
        advisory.facts.append(
            VulnFacts(cve=cve, source="mozilla", vendor_rating=rating or impact)
        )
        for package, version, branch, text in ranges_for:
            advisory.ranges.append(AffectedRange(
                cve=cve, source="mozilla", package=package, end_excluding=version,
                start_including=branch, branch=branch, fixed_in=text,
            ))
    return advisory


def is_advisory_name(name: str) -> bool:
    """Whether a file name (no folder) is an advisory's: mfsa2025-36.yml."""
    return bool(_FILE_NAME.match(name))


def advisory_files(path: Path | str) -> list[Path]:
    """Every mfsa*.yml under a mirror folder (the repository's announce/<year>/ layout or a
    flat folder), in name order."""
    folder = Path(path)
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a directory")
    return sorted((p for p in folder.rglob("*") if is_advisory_name(p.name) and p.is_file()),
                  key=lambda p: p.name)


def iter_directory(path: Path | str) -> Iterator[tuple[str, bytes]]:
    """(key, raw bytes) of every advisory_files() entry."""
    for file in advisory_files(path):
        yield file.name.rsplit(".", 1)[0], file.read_bytes()


def _fixed_ranges(fixed: list[str], title: str) -> list[tuple[str, str, str | None, str]]:
    """(package, first fixed version, ESR branch or None, fixed_in text) per Windows product."""
    parsed = [(m.group(1), m.group(2), text) for text in fixed if (m := _FIXED_IN.match(text))]
    bird_majors = [_major(v) for name, v, _ in parsed if name.startswith("Thunderbird")]
    out: list[tuple[str, str, str | None, str]] = []
    for name, version, text in parsed:
        major = _major(version)
        if name == "Firefox":
            out.append((FIREFOX, version, None, text))
        elif name == "Firefox ESR":
            out.append((FIREFOX_ESR, version, str(major), text))
        else:
            esr = (name == "Thunderbird ESR" or "Thunderbird ESR" in title
                   or major < max(bird_majors))
            out.append((THUNDERBIRD, version, str(major) if esr else None, text))
    return out


def _major(version: str) -> int:
    return int(version.split(".", 1)[0])


def _rating(value: object) -> str | None:
    text = value.strip().lower() if isinstance(value, str) else ""
    return text if text in VENDOR_RATINGS else None


def _announced(value: object) -> dt.date | None:
    """"May 17, 2025", "January 23rd, 2024" (YAML may also give a date already)."""
    if isinstance(value, dt.date):
        return value
    if not isinstance(value, str):
        return None
    text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", value.strip())
    for fmt in ("%B %d, %Y", "%b %d, %Y", "%B %d %Y", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None
