"""MSRC CVRF v3 documents (JSON or XML) to patch records.

The same monthly document comes in two spellings: the JSON API uses numbers where the XML uses
names (Remediation Type 2 = "Vendor Fix", Threat Type 3 = "Severity"). Both are read into one
small intermediate form (`_Doc`) so the patch-building rules exist once.

A patch is a Vendor Fix remediation whose Description is a KB number. Descriptions such as
"Click to Run" or Azure Linux package names are not installable Windows patches and are skipped
silently. One exception: a "Release Notes" fix of a product that installs on Windows and is
fixed by a version alone (Edge, the .NET runtimes, Visual Studio, the Remote Desktop client:
`VERSION_ONLY_PRODUCTS`) becomes a version-only patch without a KB, one per (product,
FixedBuild), so the scan can report an outdated Edge instead of calling it up to date.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException

from sources.records import (
    ParsedDocument,
    PatchRecord,
    ProductRow,
    SourceError,
    decompress,
    load_json,
    one_line,
    severity_rank,
)
from sources.vulnrecords import VulnFacts

if TYPE_CHECKING:  # the parsers stay importable without the HTTP stack loaded
    import requests

DEFAULT_BASE = "https://api.msrc.microsoft.com/cvrf/v3.0/"

_CVRF = "{http://www.icasi.org/CVRF/schema/cvrf/1.1}"
_VULN = "{http://www.icasi.org/CVRF/schema/vuln/1.1}"
_PROD = "{http://www.icasi.org/CVRF/schema/prod/1.1}"

_VENDOR_FIX = "Vendor Fix"
_SEVERITY = "Severity"
_JSON_REMEDIATION_TYPES = {2: _VENDOR_FIX, 3: "Release Notes", 6: "Known Issue"}
_JSON_THREAT_TYPES = {0: "Impact", 1: "Exploit Status", 3: _SEVERITY}

_DOC_NAME = re.compile(r"^\d{4}-[A-Za-z]{3}")
_SUFFIXES = (".xml.gz", ".json.gz", ".json", ".xml")
_KB = re.compile(r"^\s*(?:KB)?\s*(\d{4,8})\s*$", re.IGNORECASE)
_KB_IN_TEXT = re.compile(r"\d{4,8}")
# Products whose "Release Notes" fixes are version-only patches (see the module docstring).
# Linux, Mac, Android, iOS and Azure products never match: they cannot be installed on Windows.
VERSION_ONLY_PRODUCTS = re.compile(
    r"^(?:Microsoft Edge \(Chromium-based\)(?: Extended Stable)?"
    r"|\.NET \d+\.\d+(?: installed on Windows)?"
    r"|ASP\.NET Core \d+\.\d+"
    r"|Microsoft Visual Studio 20\d\d version \d+\.\d+.*"
    r"|Remote Desktop client for Windows Desktop"
    r"|Microsoft Malware Protection Engine)$",
    re.IGNORECASE,
)
_VERSION = re.compile(r"^\d+(?:\.\d+){1,3}$")
_RESTART = {"yes": "Required", "no": "Not Required", "maybe": "May Require"}
_RESTART_RANK = {None: 0, "Not Required": 1, "May Require": 2, "Required": 3}
_SEVERITY_NAMES = {"critical": "Critical", "important": "Important", "moderate": "Moderate",
                   "low": "Low"}
_MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}
# Architecture and installation-type suffixes, removed only to shorten patch titles.
_NAME_NOISE = re.compile(
    r"\s*(?:\((?:32|64)-bit editions?\)"
    r"|for (?:x64|x86|32-bit|64-bit|ARM64|ARM|Itanium)(?:[- ]based)? (?:Systems|editions?)"
    r"|\(Server Core installation\))",
    re.IGNORECASE,
)


@dataclass(slots=True)
class _Fix:
    """One Vendor Fix remediation, spelling-neutral."""

    description: str
    url: str | None
    supercedence: str | None
    product_ids: list[str]
    restart: str | None  # already mapped to RESTART_VALUES, None when empty
    subtype: str | None
    fixed_build: str | None


@dataclass(slots=True)
class _Vuln:
    cve: str
    severity: dict[str, str]  # ProductID -> severity name; "" key = threat without ProductID
    fixes: list[_Fix]


@dataclass(slots=True)
class _Doc:
    id: str
    initial: dt.date | None
    current: dt.date | None
    products: dict[str, str]
    vulns: list[_Vuln]


@dataclass(slots=True)
class _RowAcc:
    fixed_build: str | None = None
    supersedes: str | None = None
    subtype: str | None = None
    severity: str = "Unspecified"
    restart: str | None = None


@dataclass(slots=True)
class _KbAcc:
    rows: dict[str, _RowAcc] = field(default_factory=dict)
    cves: set[str] = field(default_factory=set)
    superseded: set[str] = field(default_factory=set)
    restarts: set[str | None] = field(default_factory=set)
    subtypes: Counter[str] = field(default_factory=Counter)
    url: str | None = None


# --------------------------------------------------------------------------------------------
# Public API


def parse_cvrf(raw: bytes, key: str | None = None) -> ParsedDocument:
    """Parse one monthly CVRF document (JSON, XML, either possibly gzip-compressed).

    `key` only labels error messages (e.g. the file name) until the document ID is known.

    Dates: `ParsedDocument.release_date` is the document's CurrentReleaseDate (when MSRC last
    revised it; the same value the /updates index reports, so the two can be compared), and
    every patch's `release_date` is the document's InitialReleaseDate, i.e. the Patch Tuesday of
    that month. Vulnerability revision dates are not used: they record later edits of the CVE
    text (often years later), not when a KB shipped. Caveat for the catalog merge: about a fifth
    of the KBs of 2024 also appear in the previous or next month's document (an old CVE revised
    to list a newer KB, or a new CVE fixed by last month's KB), so one KB can arrive from two
    documents with different dates and partial product lists. The document in which the KB
    fixes the most CVEs (`len(patch.cves)`) is usually the one it was released with (KB5040442:
    73 CVEs in 2024-Jul, its release month, 7 in 2024-Aug, 1 in 2024-Sep).
    """
    data, tree = _load(raw, key or "document")
    return _document(data, tree, key or "document")


def parse_cvrf_month(raw: bytes, key: str | None = None
                     ) -> tuple[ParsedDocument, list[MsrcCveScores]]:
    """parse_cvrf and parse_cvrf_vulnerabilities from one reading of the document: a sync
    needs both, and building a month's tree is most of the parse time."""
    label = key or "document"
    data, tree = _load(raw, label)
    return _document(data, tree, label), _scores(tree)


_Tree = dict[str, Any] | Element  # a JSON document's body or an XML document's root


def _load(raw: bytes, label: str) -> tuple[bytes, _Tree]:
    """The decompressed bytes and their tree, JSON or XML by the first byte."""
    data = decompress(raw, label)
    head = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    with _gc_paused():
        if head.startswith(b"{"):
            return data, _json_body(data, label)
        if head.startswith(b"<"):
            return data, _xml_root(data, label)
    raise SourceError(f"{label}: neither JSON nor XML")


def _document(data: bytes, tree: _Tree, label: str) -> ParsedDocument:
    with _gc_paused():
        doc = _read_json(tree, label) if isinstance(tree, dict) else _read_xml(tree, label)
    patches, errors = _build_patches(doc)
    return ParsedDocument(
        key=doc.id,
        release_date=doc.current or doc.initial,
        content_hash=hashlib.sha256(data).hexdigest(),
        patches=patches,
        errors=errors,
    )


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """A month of XML is about a million elements without reference cycles: the cyclic garbage
    collector only slows their construction down (measured: parse time nearly halves)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def parse_updates_index(raw: bytes) -> list[dict[str, Any]]:
    """Entries of the /updates index: ID, DocumentTitle, dates (as dates) and CvrfUrl.

    A month missing here is not deleted upstream (the index has omitted the current month for
    hours before), so callers must only ever add or refresh from it.
    """
    body = load_json(raw, "updates index")
    items = body.get("value") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise SourceError("updates index: no 'value' list")
    entries = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("ID"), str):
            continue
        entries.append({
            "ID": item["ID"],
            "DocumentTitle": _text(item.get("DocumentTitle")),
            "InitialReleaseDate": _date(item.get("InitialReleaseDate")),
            "CurrentReleaseDate": _date(item.get("CurrentReleaseDate")),
            "CvrfUrl": _text(item.get("CvrfUrl")),
        })
    return entries


def iter_directory(path: Path | str) -> Iterator[tuple[str, bytes]]:
    """(key, raw bytes) for each monthly document of an offline mirror folder, by file name.

    The key is the file name without its .json/.xml/.xml.gz suffix; bytes are returned as
    stored (parse_cvrf decompresses), so a mirror can keep whichever form it downloaded.
    """
    for key, file in list_directory(path):
        yield key, file.read_bytes()


def list_directory(path: Path | str) -> list[tuple[str, Path]]:
    """(key, file) for each monthly document of an offline mirror folder, sorted by file name,
    without reading them (a sync lists first and reads one document at a time).

    Only names that start like a document ID ("2024-Jan", "2017-May-B") count, so a saved copy
    of the /updates index beside the documents is not mistaken for one.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise SourceError(f"{folder}: not a directory")
    found = []
    for file in sorted(folder.iterdir(), key=lambda p: p.name):
        name = file.name
        suffix = next((s for s in _SUFFIXES if name.endswith(s)), None)
        if suffix and _DOC_NAME.match(name) and file.is_file():
            found.append((name[: -len(suffix)], file))
    return found


def fetch_updates_index(
    session: requests.Session, base: str = DEFAULT_BASE, timeout: float = 60.0
) -> bytes:
    """Raw /updates index. HTTP and network errors propagate so the caller's retry sees them."""
    return fetch_url(session, f"{base}updates", timeout)


def fetch_document(
    session: requests.Session, doc_id: str, base: str = DEFAULT_BASE, timeout: float = 120.0
) -> bytes:
    """Raw JSON form of one monthly document (`{base}cvrf/{ID}`), for parse_cvrf."""
    return fetch_url(session, document_url(doc_id, base), timeout)


def document_url(doc_id: str, base: str = DEFAULT_BASE) -> str:
    """Where the API serves a document the /updates index lists without a CvrfUrl."""
    return f"{base}cvrf/{doc_id}"


def fetch_url(session: requests.Session, url: str,
              timeout: float | tuple[float, float] = 120.0) -> bytes:
    """Raw JSON form of a document at the URL the /updates index gives (its CvrfUrl). HTTP
    and network errors propagate so the caller's retry sees them."""
    response = session.get(url, headers={"Accept": "application/json"}, timeout=timeout)
    response.raise_for_status()
    return response.content


# --------------------------------------------------------------------------------------------
# Reading both spellings into _Doc


def content_hash(raw: bytes, key: str | None = None) -> str:
    """The hash parse_cvrf puts in ParsedDocument.content_hash, without parsing: lets a sync
    skip an unchanged document for the cost of a gunzip."""
    return hashlib.sha256(decompress(raw, key or "document")).hexdigest()


def _read_xml(root: Element, label: str) -> _Doc:
    tracking = root.find(f"{_CVRF}DocumentTracking")
    doc_id = None
    if tracking is not None:
        doc_id = tracking.findtext(f"{_CVRF}Identification/{_CVRF}ID")
    if not doc_id or not doc_id.strip():
        raise SourceError(f"{label}: document has no DocumentTracking/Identification/ID")

    return _Doc(
        id=doc_id.strip(),
        initial=_date(tracking.findtext(f"{_CVRF}InitialReleaseDate")),
        current=_date(tracking.findtext(f"{_CVRF}CurrentReleaseDate")),
        products=_xml_products(root),
        vulns=[_xml_vuln(v) for v in root.iterfind(f"{_VULN}Vulnerability")],
    )


_V_CVE, _V_THREATS, _V_REMS = f"{_VULN}CVE", f"{_VULN}Threats", f"{_VULN}Remediations"
_V_DESC, _V_PID, _V_URL = f"{_VULN}Description", f"{_VULN}ProductID", f"{_VULN}URL"
_V_SUP, _V_RESTART = f"{_VULN}Supercedence", f"{_VULN}RestartRequired"
_V_SUBTYPE, _V_BUILD = f"{_VULN}SubType", f"{_VULN}FixedBuild"


def _xml_vuln(vuln: Element) -> _Vuln:
    """One pass over the children: find()/findtext() per field would rescan every element."""
    cve = ""
    severity: dict[str, str] = {}
    fixes: list[_Fix] = []
    for child in vuln:
        tag = child.tag
        if tag == _V_CVE:
            cve = (child.text or "").strip()
        elif tag == _V_THREATS:
            for threat in child:
                if threat.get("Type") != _SEVERITY:
                    continue
                desc, pids = None, []
                for part in threat:
                    if part.tag == _V_DESC:
                        desc = part.text
                    elif part.tag == _V_PID and part.text:
                        pids.append(part.text.strip())
                _add_severity(severity, desc, pids)
        elif tag == _V_REMS:
            for rem in child:
                if rem.get("Type") == _VENDOR_FIX:
                    fixes.append(_xml_fix(rem))
    return _Vuln(cve, severity, fixes)


def _xml_fix(rem: Element) -> _Fix:
    values: dict[str, str | None] = {}
    pids: list[str] = []
    for part in rem:
        if part.tag == _V_PID:
            if part.text:
                pids.append(part.text.strip())
        else:
            values[part.tag] = part.text
    return _Fix(
        description=(values.get(_V_DESC) or "").strip(),
        url=_clean(values.get(_V_URL)),
        supercedence=_clean(values.get(_V_SUP)),
        product_ids=pids,
        restart=_restart(values.get(_V_RESTART)),
        subtype=_clean(values.get(_V_SUBTYPE)),
        fixed_build=_clean(values.get(_V_BUILD)),
    )


def _read_json(body: dict[str, Any], label: str) -> _Doc:
    tracking = _dict(body.get("DocumentTracking"))
    doc_id = _text(_dict(tracking.get("Identification")).get("ID"))
    if not doc_id:
        raise SourceError(f"{label}: document has no DocumentTracking.Identification.ID")

    vulns = []
    for vuln in _list(body.get("Vulnerability")):
        if not isinstance(vuln, dict):
            continue
        severity: dict[str, str] = {}
        for threat in _list(vuln.get("Threats")):
            if isinstance(threat, dict) and _json_type(threat, _JSON_THREAT_TYPES) == _SEVERITY:
                _add_severity(severity, _text(threat.get("Description")), _ids(threat))
        fixes = [
            _Fix(
                description=(_text(rem.get("Description")) or "").strip(),
                url=_clean(_text(rem.get("URL"))),
                supercedence=_clean(_text(rem.get("Supercedence"))),
                product_ids=_ids(rem),
                restart=_restart(_text(rem.get("RestartRequired"))),
                subtype=_clean(_text(rem.get("SubType"))),
                fixed_build=_clean(_text(rem.get("FixedBuild"))),
            )
            for rem in _list(vuln.get("Remediations"))
            if isinstance(rem, dict) and _json_type(rem, _JSON_REMEDIATION_TYPES) == _VENDOR_FIX
        ]
        vulns.append(_Vuln((_text(vuln.get("CVE")) or "").strip(), severity, fixes))

    return _Doc(
        id=doc_id.strip(),
        initial=_date(tracking.get("InitialReleaseDate")),
        current=_date(tracking.get("CurrentReleaseDate")),
        products=_json_products(body),
        vulns=vulns,
    )


def _xml_products(root: Element) -> dict[str, str]:
    """ProductID -> product name of the ProductTree (the first spelling of an ID wins)."""
    products: dict[str, str] = {}
    tree = root.find(f"{_PROD}ProductTree")
    if tree is not None:
        for item in tree.iter(f"{_PROD}FullProductName"):
            pid = item.get("ProductID")
            if pid and item.text:
                products.setdefault(pid, item.text.strip())
    return products


def _json_products(body: dict[str, Any]) -> dict[str, str]:
    """ProductID -> product name of the ProductTree (the first spelling of an ID wins)."""
    products: dict[str, str] = {}
    for item in _json_product_names(_dict(body.get("ProductTree"))):
        pid, name = _text(item.get("ProductID")), _text(item.get("Value"))
        if pid and name:
            products.setdefault(pid, name.strip())
    return products


def _json_product_names(tree: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Top-level FullProductName entries and the nested Branch/Items leaves, iteratively."""
    yield from (p for p in _list(tree.get("FullProductName")) if isinstance(p, dict))
    stack = list(_list(tree.get("Branch")))
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        if "ProductID" in node:
            yield node
        stack.extend(_list(node.get("Items")))


def _json_type(obj: dict[str, Any], names: dict[int, str]) -> str | None:
    value = obj.get("Type")
    if isinstance(value, int) and not isinstance(value, bool):
        return names.get(value)
    return value if isinstance(value, str) else None


def _ids(obj: dict[str, Any]) -> list[str]:
    value = obj.get("ProductID")
    if isinstance(value, (str, int)):
        value = [value]
    return [str(p).strip() for p in _list(value) if isinstance(p, (str, int))]


# --------------------------------------------------------------------------------------------
# Building patches


def _build_patches(doc: _Doc) -> tuple[list[PatchRecord], list[str]]:
    errors: list[str] = []
    missing: set[str] = set()
    kbs: dict[str, _KbAcc] = {}
    versioned: dict[tuple[str, str], _KbAcc] = {}
    for vuln in doc.vulns:
        for fix in vuln.fixes:
            match = _KB.match(fix.description)
            if not match:
                _version_only(doc, vuln, fix, versioned)
                continue
            kb = f"KB{match.group(1)}"
            acc = kbs.get(kb)
            if acc is None:
                acc = kbs[kb] = _KbAcc()
            if vuln.cve:
                acc.cves.add(vuln.cve)
            acc.url = acc.url or fix.url
            acc.restarts.add(fix.restart)
            if fix.subtype:
                acc.subtypes[fix.subtype] += 1
            superseded = [f"KB{d}" for d in _KB_IN_TEXT.findall(fix.supercedence or "")]
            acc.superseded.update(s for s in superseded if s != kb)
            for pid in fix.product_ids:
                name = doc.products.get(pid)
                if name is None:
                    missing.add(pid)
                    name = f"ProductID {pid}"
                _merge_row(acc.rows, name, fix, superseded, _severity_for(vuln.severity, pid))
    if missing:
        errors.append(
            f"{doc.id}: ProductID not in ProductTree: {', '.join(sorted(missing)[:10])}"
            + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
        )
    month = _month_label(doc)
    patches = [_patch(doc, month, kb, acc) for kb, acc in sorted(kbs.items())]
    patches += [
        _version_patch(doc, month, name, version, acc)
        for (name, version), acc in sorted(versioned.items())
    ]
    return patches, errors


def _version_only(
    doc: _Doc, vuln: _Vuln, fix: _Fix, versioned: dict[tuple[str, str], _KbAcc]
) -> None:
    """Collect a "Release Notes" fix of a Windows product fixed by a version alone."""
    version = (fix.fixed_build or "").strip()
    if fix.description.casefold() != "release notes" or not _VERSION.match(version):
        return
    for pid in fix.product_ids:
        name = doc.products.get(pid)
        if name is None or not VERSION_ONLY_PRODUCTS.match(name):
            continue
        acc = versioned.get((name, version))
        if acc is None:
            acc = versioned[(name, version)] = _KbAcc()
        if vuln.cve:
            acc.cves.add(vuln.cve)
        acc.url = acc.url or fix.url
        acc.restarts.add(fix.restart)
        _merge_row(acc.rows, name, fix, [], _severity_for(vuln.severity, pid))


def _version_patch(
    doc: _Doc, month: str | None, name: str, version: str, acc: _KbAcc
) -> PatchRecord:
    """A version-only patch: no KB, key `msrc:<product>@<version>`, one product row."""
    patch = _patch(doc, month, "", acc)
    title = " ".join(p for p in (month, "Security Update for", name, version) if p)
    return replace(
        patch, key=f"msrc:{name}@{version}"[:255], kb=None, title=title, version=version
    )


def _merge_row(
    rows: dict[str, _RowAcc], name: str, fix: _Fix, superseded: list[str], severity: str
) -> None:
    row = rows.get(name)
    if row is None:
        row = rows[name] = _RowAcc()
    row.fixed_build = row.fixed_build or fix.fixed_build
    row.supersedes = row.supersedes or (superseded[0] if superseded else None)
    row.subtype = row.subtype or fix.subtype
    if severity_rank(severity) > severity_rank(row.severity):
        row.severity = severity
    if _RESTART_RANK[fix.restart] > _RESTART_RANK[row.restart]:
        row.restart = fix.restart


def _patch(doc: _Doc, month: str | None, kb: str, acc: _KbAcc) -> PatchRecord:
    products = tuple(
        ProductRow(
            name=name,
            fixed_build=row.fixed_build,
            supersedes=row.supersedes,
            subtype=row.subtype,
            severity=row.severity,
            restart_required=row.restart,
        )
        for name, row in sorted(acc.rows.items())
    )
    severity = max((p.severity for p in products), key=severity_rank, default="Unspecified")
    if "Required" in acc.restarts:
        restart = "Required"
    elif None in acc.restarts or "May Require" in acc.restarts:
        restart = "May Require"
    else:
        restart = "Not Required"
    return PatchRecord(
        source="msrc",
        key=kb,
        title=_title(month, acc, kb),
        vendor="Microsoft",
        category="Security Updates",
        severity=severity if severity_rank(severity) else "Unspecified",
        restart_required=restart,
        kb=kb,
        release_date=doc.initial or doc.current,
        info_url=acc.url,
        products=products,
        cves=tuple(sorted(acc.cves)),
        supersedes=tuple(sorted(acc.superseded)),
    )


def _title(month: str | None, acc: _KbAcc, kb: str) -> str:
    """E.g. "2024-01 Security Update for Windows 11 Version 22H2, Windows 11 Version 23H2
    (KB5034123)": the month and the products without their architecture variants, which is how
    an admin recognises a KB faster than by its number alone."""
    kind = acc.subtypes.most_common(1)[0][0] if acc.subtypes else "Security Update"
    kind = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", kind)  # "SecurityHotpatchUpdate"
    families: list[str] = []
    for name in acc.rows:
        family = " ".join(_NAME_NOISE.sub("", name).split()).rstrip(",")
        if family not in families:
            families.append(family)
    families.sort()
    scope = ", ".join(families[:2])
    if len(families) > 2:
        scope += f" and {len(families) - 2} more"
    parts = [month, kind, f"for {scope}" if scope else None, f"({kb})"]
    return " ".join(p for p in parts if p)


def _month_label(doc: _Doc) -> str | None:
    """"2024-Jan" -> "2024-01", the form Windows Update titles use."""
    match = re.match(r"^(\d{4})-([A-Za-z]{3})$", doc.id)
    if match and match.group(2).title() in _MONTHS:
        return f"{match.group(1)}-{_MONTHS[match.group(2).title()]:02d}"
    day = doc.initial or doc.current
    return f"{day.year}-{day.month:02d}" if day else None


def _add_severity(severity: dict[str, str], desc: str | None, pids: Iterable[str]) -> None:
    name = _SEVERITY_NAMES.get((desc or "").strip().lower())
    if name is None:
        return
    for pid in pids or ("",):
        if severity_rank(name) > severity_rank(severity.get(pid)):
            severity[pid] = name


def _severity_for(severity: dict[str, str], pid: str) -> str:
    own, common = severity.get(pid), severity.get("")
    best = own if severity_rank(own) >= severity_rank(common) else common
    return best or "Unspecified"


# --------------------------------------------------------------------------------------------
# Small value helpers (JSON values may be {"Value": ...} wrappers, plain strings, or junk)


def _text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("Value")
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _clean(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


def _restart(value: str | None) -> str | None:
    return _RESTART.get((value or "").strip().lower())


def _date(value: Any) -> dt.date | None:
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        day = dt.date.fromisoformat(value[:10])
    except ValueError:
        return None
    return None if day.year <= 1 else day  # JSON uses 0001-01-01 for "not specified"


# --------------------------------------------------------------------------------------------
# Vulnerability facts: CVSS v3 per product and the exploitation status


@dataclass(frozen=True)
class MsrcCveScores:
    """A CVE's MSRC facts: the highest CVSS v3 base score over its products (in `facts`) and
    each product's own (score, vector), since MSRC scores one CVE differently per product."""

    facts: VulnFacts
    per_product: dict[str, tuple[float, str | None]]


_EXPLOIT_STATUS = "Exploit Status"
_V_SCORESETS, _V_BASE, _V_VECTOR = f"{_VULN}CVSSScoreSets", f"{_VULN}BaseScore", f"{_VULN}Vector"


def parse_cvrf_vulnerabilities(raw: bytes, key: str | None = None) -> list[MsrcCveScores]:
    """Per CVE of a monthly document: CVSS v3 base score and vector per product, and the
    "Exploit Status" threat (`Publicly Disclosed:No;Exploited:Yes;...`) as booleans.

    Kept apart from parse_cvrf so the patch catalog and the vulnerability feed can evolve
    independently; errors are the same one-line SourceErrors.
    """
    return _scores(_load(raw, key or "document")[1])


def _scores(tree: _Tree) -> list[MsrcCveScores]:
    if isinstance(tree, dict):
        products = _json_products(tree)
        raw_vulns = [_json_vuln_scores(v) for v in _list(tree.get("Vulnerability"))
                     if isinstance(v, dict)]
    else:
        products = _xml_products(tree)
        raw_vulns = [_xml_vuln_scores(v) for v in tree.iterfind(f"{_VULN}Vulnerability")]
    out = []
    for cve, status, sets in raw_vulns:
        if not cve:
            continue
        per_product: dict[str, tuple[float, str | None]] = {}
        for score, vector, pids in sets:
            for pid in pids or [""]:
                name = products.get(pid, f"ProductID {pid}" if pid else "")
                if name not in per_product or score > per_product[name][0]:
                    per_product[name] = (score, vector)
        best = max(per_product.values(), key=lambda sv: sv[0], default=None)
        exploited, disclosed = _exploit_status(status)
        out.append(MsrcCveScores(
            facts=VulnFacts(
                cve=cve, source="msrc",
                cvss=best[0] if best else None, vector=best[1] if best else None,
                score_source="vendor" if best else None,
                exploited=exploited, publicly_disclosed=disclosed,
            ),
            per_product={k: v for k, v in per_product.items() if k},
        ))
    return out


_ScoreSet = tuple[float, str | None, list[str]]


def _json_body(data: bytes, label: str) -> dict[str, Any]:
    body = load_json(data, label)
    if not isinstance(body, dict):
        raise SourceError(f"{label}: JSON document is not an object")
    return body


def _xml_root(data: bytes, label: str) -> Element:
    try:
        root = DefusedET.fromstring(data)
    except DefusedXmlException as exc:
        raise SourceError(f"{label}: refused unsafe XML: {one_line(exc)}") from None
    except ParseError as exc:
        raise SourceError(f"{label}: malformed XML: {one_line(exc)}") from None
    if root.tag != f"{_CVRF}cvrfdoc":
        raise SourceError(f"{label}: not a CVRF 1.1 document (root element {root.tag})")
    return root


def _json_vuln_scores(vuln: dict[str, Any]) -> tuple[str, str | None, list[_ScoreSet]]:
    status = None
    for threat in _list(vuln.get("Threats")):
        if isinstance(threat, dict) and _json_type(threat, _JSON_THREAT_TYPES) == _EXPLOIT_STATUS:
            status = _text(threat.get("Description")) or status
    sets: list[_ScoreSet] = []
    for item in _list(vuln.get("CVSSScoreSets")):
        score = _score(item.get("BaseScore")) if isinstance(item, dict) else None
        if score is not None:
            sets.append((score, _clean(_text(item.get("Vector"))), _ids(item)))
    return (_text(vuln.get("CVE")) or "").strip(), status, sets


def _xml_vuln_scores(vuln: Element) -> tuple[str, str | None, list[_ScoreSet]]:
    status = None
    sets: list[_ScoreSet] = []
    for threat in vuln.iterfind(f"{_V_THREATS}/{_VULN}Threat"):
        if threat.get("Type") == _EXPLOIT_STATUS:
            status = threat.findtext(_V_DESC) or status
    for scoreset in vuln.iterfind(f"{_V_SCORESETS}/{_VULN}ScoreSet"):
        score = _score(scoreset.findtext(_V_BASE))
        if score is not None:
            pids = [p.text.strip() for p in scoreset.iterfind(_V_PID) if p.text]
            sets.append((score, _clean(scoreset.findtext(_V_VECTOR)), pids))
    return (vuln.findtext(_V_CVE) or "").strip(), status, sets


def _score(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if 0.0 <= score <= 10.0 else None


def _exploit_status(text: str | None) -> tuple[bool | None, bool | None]:
    """"Publicly Disclosed:No;Exploited:Yes;..." -> (exploited, publicly disclosed)."""
    fields: dict[str, bool] = {}
    for part in (text or "").split(";"):
        name, _, value = part.partition(":")
        flag = value.strip().lower()
        if flag in ("yes", "no"):
            fields[name.strip().lower()] = flag == "yes"
    return fields.get("exploited"), fields.get("publicly disclosed")
