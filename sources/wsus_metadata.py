"""WSUS update metadata (the XML Microsoft Update publishes) to patch records.

Two upstreams carry the same metadata: the offline catalog `wsusscn2.cab`, where each update is
split into core, extended and localized XML fragments, and a WSUS server speaking [MS-WSUSSS],
which returns each update as one XML document. Both are read into `WsusUpdate` by the same
namespace-blind reader (`read_update_xml`), and `build_records` turns a set of updates into
catalog records, so the mapping rules below exist once:

- classification by its official GUID -> the product's category names;
- products by the Product categories (titles from the category updates when present);
- `MsrcSeverity` -> severity; `InstallationBehavior/@RebootBehavior` -> restart required
  (NeverReboots -> Not Required, AlwaysRequiresReboot -> Required, CanRequestReboot -> May
  Require; a bundle takes the strongest of itself and its bundled updates);
- one patch per KB (all the updates for several products, architectures and languages of one KB
  become one patch with one product row each, like the MSRC feed); updates without a KB are
  keyed by their UpdateId;
- supersedence resolved by UpdateId, from both directions the sources state it
  (`SupersededUpdates` in the update, `SupersededBy` revisions in the cab's package.xml);
- EULA presence, languages, CVE ids, and the payload files that carry a SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException

from sources.records import InstallerRecord, PatchRecord, ProductRow, SourceError, severity_rank

# Official classification GUIDs (Microsoft "WSUS Classification GUIDs" and the Windows Update
# deferral documentation for Drivers and Upgrades), lowercase.
CLASSIFICATIONS: dict[str, str] = {
    "0fa1201d-4330-4fa8-8ae9-b877473b6441": "Security Updates",
    "e6cf1350-c01b-414d-a61f-263d14d133b4": "Critical Updates",
    "28bc880e-0592-4cbf-8f95-c79b17911d5f": "Update Rollups",
    "68c5b0a3-d1a6-4553-ae49-01d3a7827828": "Service Packs",
    "b54e7d24-7add-428f-8b75-90a396fa584f": "Feature Packs",
    "cd5ffd1e-e932-4e3a-bf74-18bf0b1bbd83": "Updates",
    "e0789628-ce08-4437-be74-2495b842f43b": "Definition Updates",
    "b4832bd8-e735-4761-8daf-37f882276dab": "Tools",
    "ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0": "Drivers",
    "3689bdc8-b205-4af4-8d4a-a63924c5e9d5": "Upgrades",
    "5c9376ab-8ce6-464a-b136-22113dd69801": "Applications",
    # Classifications the product has no category for, mapped to the nearest one.
    "77835c8d-62a7-41f5-82ad-f28d1af1e3b1": "Drivers",  # Driver Sets
    "e140075d-8433-45c3-ad87-e72345b36078": "Tools",  # Developer Kits
    "434de588-ed14-48f5-8eed-a15e09a991f6": "Tools",  # Connectors
    "9511d615-35b2-47bb-927f-f73d8e9260bb": "Updates",  # Guidance
}
DEFAULT_CATEGORY = "Updates"
REBOOT = {
    "NeverReboots": "Not Required",
    "AlwaysRequiresReboot": "Required",
    "CanRequestReboot": "May Require",
}
_RESTART_RANK = {"Not Required": 0, "May Require": 1, "Required": 2}
_SEVERITIES = {"critical": "Critical", "important": "Important", "moderate": "Moderate",
               "low": "Low"}
_KB_DIGITS = re.compile(r"^\s*(?:KB)?\s*(\d{4,8})\s*$", re.IGNORECASE)
_KB_IN_TITLE = re.compile(r"\(KB(\d{4,8})\)", re.IGNORECASE)
_GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NEUTRAL_LANGUAGES = {"", "all", "neutral"}
_INSTALLER_TYPES = {".msu": "msu", ".cab": "cab", ".exe": "exe", ".msi": "msi"}
_SILENT = {"msu": "/quiet /norestart", "msi": "/qn /norestart"}
_ARCH_WORDS = ((re.compile(r"\barm64\b"), "arm64"), (re.compile(r"\b(x64|amd64)\b"), "x64"),
               (re.compile(r"\bx86\b"), "x86"), (re.compile(r"\barm\b"), "arm"))


@dataclass(slots=True)
class WsusFile:
    """One payload file: identified by its SHA-1 digest (base64), as WSUS does."""

    name: str
    digest: str  # base64 SHA-1, the key file locations are listed under
    sha256: str | None = None  # lowercase hex, when the metadata carries it
    size: int | None = None
    url: str | None = None


@dataclass(slots=True)
class WsusUpdate:
    """What patchflow keeps of one WSUS update (software update, category or detectoid)."""

    update_id: str  # lowercase GUID
    revision_id: int | None = None
    update_type: str | None = None  # Software | Driver | Category | Detectoid
    category_type: str | None = None  # for categories: Product, UpdateClassification, ...
    created: dt.date | None = None
    title: str | None = None
    description: str | None = None
    info_url: str | None = None
    kb: str | None = None  # digits only
    msrc_severity: str | None = None
    reboot: str | None = None  # raw RebootBehavior
    languages: set[str] = field(default_factory=set)
    eula: bool = False
    classification_ids: list[str] = field(default_factory=list)
    product_ids: list[str] = field(default_factory=list)
    category_prereqs: list[str] = field(default_factory=list)  # AtLeastOne IsCategory ids
    supersedes: set[str] = field(default_factory=set)  # UpdateIds
    bundled: list[str] = field(default_factory=list)  # UpdateIds of bundled updates
    bundled_by: list[str] = field(default_factory=list)  # UpdateIds of bundles holding it
    cves: set[str] = field(default_factory=set)
    files: list[WsusFile] = field(default_factory=list)
    payload_digests: list[str] = field(default_factory=list)  # cab: PayloadFiles ids
    encrypted: list[str] = field(default_factory=list)  # digests of encrypted files (WSUS)
    is_bundle: bool = False

    @property
    def is_software(self) -> bool:
        return self.update_type in (None, "Software", "Driver")


# --------------------------------------------------------------------------------------------
# XML reading


def local(tag: object) -> str:
    """The element name without its namespace: cab fragments have none, WSUS XML has several."""
    text = tag if isinstance(tag, str) else ""
    return text.rsplit("}", 1)[-1]


def parse_xml(data: bytes, label: str, fragment: bool = False) -> Element:
    """Parse with defusedxml (no DTDs, no entities); a fragment (several top-level elements,
    as the cab's c/x/l files are) is wrapped in one root first."""
    if fragment:
        body = data.lstrip(b"\xef\xbb\xbf \t\r\n")
        if body.startswith(b"<?xml"):
            end = body.find(b"?>")
            body = body[end + 2 :] if end >= 0 else body
        data = b"<fragment>" + body + b"</fragment>"
    try:
        return DefusedET.fromstring(data)
    except DefusedXmlException as exc:
        raise SourceError(f"{label}: refused unsafe XML: {_one_line(exc)}") from None
    except ParseError as exc:
        raise SourceError(f"{label}: malformed XML: {_one_line(exc)}") from None


def read_update_xml(root: Element, update: WsusUpdate) -> None:
    """Fill `update` from update XML: a whole update (WSUS) or any of the cab's fragments.

    Names are matched without namespaces; the elements that identify other updates
    (UpdateIdentity inside Relationships) are read only in their own context.
    """
    for child in list(root):
        name = local(child.tag)
        if name == "UpdateIdentity":
            _identity(child, update)
        elif name in ("Properties", "ExtendedProperties"):
            _properties(child, update)
        elif name == "LocalizedPropertiesCollection":
            _localized(_pick_localized(list(child)), update)
        elif name == "LocalizedProperties":
            _localized(child, update)
        elif name == "Relationships":
            _relationships(child, update)
        elif name == "Files":
            update.files.extend(_files(child))
        elif name == "HandlerSpecificData":
            _handler(child, update)
        elif name in ("Update", "fragment"):
            read_update_xml(child, update)


def _identity(element: Element, update: WsusUpdate) -> None:
    uid = (element.get("UpdateID") or "").lower()
    if uid and not update.update_id:
        update.update_id = uid


def _properties(element: Element, update: WsusUpdate) -> None:
    update.update_type = element.get("UpdateType") or update.update_type
    severity = element.get("MsrcSeverity")
    if severity:
        update.msrc_severity = severity
    created = element.get("CreationDate")
    if created and update.created is None:
        update.created = parse_date(created)
    for item in element:  # direct children: a EulaFile has Language children of its own
        name = local(item.tag)
        text = (item.text or "").strip()
        if name == "InstallationBehavior":
            # Absent attribute: the schema's default is NeverReboots.
            update.reboot = _stronger(update.reboot, item.get("RebootBehavior", "NeverReboots"))
        elif name == "KBArticleID" and text:
            match = _KB_DIGITS.match(text)
            update.kb = match.group(1) if match else update.kb
        elif name == "CveID" and text:
            update.cves.add(text.upper())
        elif name == "Language" and text:
            update.languages.add(text)
        elif name in ("EulaFile", "EulaFiles"):
            update.eula = True
        elif name == "SupportUrl" and text and not update.info_url:
            update.info_url = text


def _pick_localized(items: list[Element]) -> Element | None:
    """English when offered (catalog titles are English), else the first language."""
    for item in items:
        language = next((c.text for c in item if local(c.tag) == "Language"), None)
        if (language or "").lower().startswith("en"):
            return item
    return items[0] if items else None


def _localized(element: Element | None, update: WsusUpdate) -> None:
    if element is None:
        return
    for child in element:
        name = local(child.tag)
        text = (child.text or "").strip()
        if name == "Title" and text:
            update.title = text
        elif name == "Description" and text:
            update.description = text
        elif name == "MoreInfoUrl" and text:
            update.info_url = text


def _relationships(element: Element, update: WsusUpdate) -> None:
    for child in element:
        name = local(child.tag)
        if name == "SupersededUpdates":
            update.supersedes.update(_ids(child))
        elif name == "BundledUpdates":
            update.bundled.extend(i for i in _ids(child) if i not in update.bundled)
        elif name == "Prerequisites":
            for group in child.iter():
                if local(group.tag) == "AtLeastOne" and group.get("IsCategory") == "true":
                    update.category_prereqs.extend(_ids(group))


def _ids(element: Element) -> list[str]:
    return [(i.get("UpdateID") or "").lower() for i in element.iter()
            if local(i.tag) == "UpdateIdentity" and i.get("UpdateID")]


def _files(element: Element) -> list[WsusFile]:
    files = []
    for item in element:
        if local(item.tag) != "File":
            continue
        sha256 = None
        for extra in item:
            if local(extra.tag) == "AdditionalDigest" and extra.get("Algorithm") == "SHA256":
                sha256 = b64_to_hex(extra.text or "")
        size = item.get("Size")
        files.append(WsusFile(
            name=item.get("FileName") or "",
            digest=(item.get("Digest") or "").strip(),
            sha256=sha256,
            size=int(size) if size and size.isdigit() else None,
        ))
    return files


def _handler(element: Element, update: WsusUpdate) -> None:
    for item in element.iter():
        if local(item.tag) == "CategoryInformation":
            update.category_type = item.get("CategoryType") or update.category_type


def b64_to_hex(text: str) -> str | None:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == 32 else None


def parse_date(text: str | None) -> dt.date | None:
    if not text:
        return None
    try:
        return dt.date.fromisoformat(text.strip()[:10])
    except ValueError:
        return None


def is_guid(text: str) -> bool:
    return bool(_GUID.match(text))


def _stronger(current: str | None, new: str | None) -> str | None:
    rank = {"NeverReboots": 0, "CanRequestReboot": 1, "AlwaysRequiresReboot": 2}
    if new not in rank:
        return current
    if current not in rank:
        return new
    return new if rank[new] > rank[current] else current


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --------------------------------------------------------------------------------------------
# Records


def build_records(updates: Mapping[str, WsusUpdate],
                  known_keys: Mapping[str, str] | None = None) -> list[PatchRecord]:
    """Catalog records for the installable updates among `updates` (keyed by UpdateId).

    Installable: software or driver updates that are not bundled inside another update (the
    bundle is what WSUS offers; its bundled updates carry the files and reboot behaviour).
    `known_keys` maps UpdateIds stored by an earlier sync to their patch keys, so an update
    superseding one synced before is linked too.
    """
    return [record for record, _sources in build_records_with_sources(updates, known_keys)]


def build_records_with_sources(
    updates: Mapping[str, WsusUpdate], known_keys: Mapping[str, str] | None = None
) -> list[tuple[PatchRecord, list[str]]]:
    """Like build_records, with the UpdateIds each record was made from (the bundles and their
    bundled updates), so a caller can store a record and its bookkeeping together."""
    titles = {uid: u.title for uid, u in updates.items() if u.title}
    inside = {c for u in updates.values() for c in u.bundled}
    parents = [u for u in updates.values() if u.is_software and u.update_id not in inside
               and not _bundled_by_known(u, updates)]
    keys = {**(known_keys or {}), **{u.update_id: patch_key(u) for u in parents}}
    groups: dict[str, list[WsusUpdate]] = defaultdict(list)
    for update in parents:
        groups[keys[update.update_id]].append(update)
    superseded_by = _superseded_keys(parents, keys)
    result = []
    for key in sorted(groups):
        group = groups[key]
        record = _record(key, group, updates, titles, keys, superseded_by)
        sources = [u.update_id for u in group]
        sources += [c for u in group for c in u.bundled if c in updates and c not in sources]
        result.append((record, sources))
    return result


def _bundled_by_known(update: WsusUpdate, updates: Mapping[str, WsusUpdate]) -> bool:
    return any(parent in updates for parent in update.bundled_by)


def patch_key(update: WsusUpdate) -> str:
    kb = update.kb or _kb_from_title(update.title)
    return f"KB{kb}" if kb else f"wsus:{update.update_id}"


def _kb_from_title(title: str | None) -> str | None:
    match = _KB_IN_TITLE.search(title or "")
    return match.group(1) if match else None


def _superseded_keys(parents: list[WsusUpdate], keys: dict[str, str]) -> dict[str, set[str]]:
    """Patch key -> keys of the patches it supersedes, by UpdateId; self-references (two
    revisions or products of one KB) are dropped, and superseded updates the source no longer
    lists are ignored (their KB is unknown)."""
    result: dict[str, set[str]] = defaultdict(set)
    for update in parents:
        key = keys[update.update_id]
        for old in update.supersedes:
            old_key = keys.get(old)
            if old_key and old_key != key:
                result[key].add(old_key)
    return result


def _record(
    key: str,
    group: list[WsusUpdate],
    updates: Mapping[str, WsusUpdate],
    titles: dict[str, str],
    keys: dict[str, str],
    superseded: dict[str, set[str]],
) -> PatchRecord:
    # The shortest title is the least product-specific one ("... for Windows 11" over
    # "... for Windows 11 Version 23H2 for x64-based Systems").
    group = sorted(group, key=lambda u: (len(u.title or "~" * 999), u.update_id))
    first = group[0]
    category = _category(first)
    rows: dict[str, ProductRow] = {}
    languages: set[str] = set()
    cves: set[str] = set()
    installers: dict[str, InstallerRecord] = {}
    severity, restart, eula = "Unspecified", None, False
    for update in group:
        children = [updates[c] for c in update.bundled if c in updates]
        update_restart = _restart(update, children)
        update_severity = _severity(update.msrc_severity)
        severity = max(severity, update_severity, key=severity_rank)
        restart = _max_restart(restart, update_restart)
        eula = eula or update.eula or any(c.eula for c in children)
        for lang in (update.languages | {x for c in children for x in c.languages}):
            if lang.lower() not in _NEUTRAL_LANGUAGES:
                languages.add(lang)
        cves |= update.cves | {x for c in children for x in c.cves}
        supersedes = sorted(keys[u] for u in update.supersedes
                            if u in keys and keys[u] != key)
        for name in _product_names(update, titles):
            row = rows.get(name)
            rows[name] = ProductRow(
                name=name,
                supersedes=(row.supersedes if row and row.supersedes else
                            supersedes[0] if supersedes else None),
                subtype=category,
                severity=max(row.severity if row else "Unspecified", update_severity,
                             key=severity_rank),
                restart_required=_max_restart(row.restart_required if row else None,
                                              update_restart),
            )
        for installer in _installers(update, children):
            installers.setdefault(installer.sha256, installer)
    kb = key[2:] if key.startswith("KB") else None
    dates = [u.created for u in group if u.created]
    return PatchRecord(
        source="wsus",
        key=key,
        title=first.title or f"Update {first.update_id}",
        vendor="Microsoft",
        category=category,
        severity=severity,
        restart_required=restart or "May Require",
        kb=f"KB{kb}" if kb else None,
        release_date=min(dates) if dates else None,
        eula_required=eula,
        info_url=first.info_url,
        description=first.description,
        languages=tuple(sorted(languages)),
        products=tuple(rows[n] for n in sorted(rows)),
        cves=tuple(sorted(cves)),
        installers=tuple(installers[s] for s in sorted(installers)),
        supersedes=tuple(sorted(superseded.get(key, ()))),
    )


def _category(update: WsusUpdate) -> str:
    for guid in [*update.classification_ids, *update.category_prereqs]:
        if guid in CLASSIFICATIONS:
            return CLASSIFICATIONS[guid]
    return "Drivers" if update.update_type == "Driver" else DEFAULT_CATEGORY


def _product_names(update: WsusUpdate, titles: dict[str, str]) -> list[str]:
    """Product titles from the Product categories; without them, the category prerequisites
    that are not classifications. A product whose category update is not in the source is
    named by its GUID, so it still filters consistently."""
    ids = update.product_ids or [g for g in update.category_prereqs if g not in CLASSIFICATIONS]
    names = []
    for guid in dict.fromkeys(ids):
        name = titles.get(guid) or f"Product {guid}"
        if name not in names:
            names.append(name)
    return names


def _severity(value: str | None) -> str:
    return _SEVERITIES.get((value or "").strip().lower(), "Unspecified")


def _max_restart(a: str | None, b: str) -> str:
    return b if a is None else max(a, b, key=lambda v: _RESTART_RANK.get(v, 1))


def _restart(update: WsusUpdate, children: list[WsusUpdate]) -> str:
    behaviour = update.reboot
    for child in children:
        behaviour = _stronger(behaviour, child.reboot)
    return REBOOT.get(behaviour or "", "May Require")


def _installers(update: WsusUpdate, children: list[WsusUpdate]) -> Iterator[InstallerRecord]:
    """Files with a SHA-256 and a download location; the catalog verifies every download by
    SHA-256, so a file known only by its SHA-1 is not offered as an installer."""
    for owner in (update, *children):
        language = _single_language(owner.languages)
        for file in owner.files:
            kind = _INSTALLER_TYPES.get(_suffix(file.name))
            if not (file.sha256 and file.url and kind):
                continue
            yield InstallerRecord(
                url=file.url, sha256=file.sha256, type=kind,
                arch=_arch(file.name, owner.title or update.title or ""),
                locale=language, silent_switches=_SILENT.get(kind),
            )


def _single_language(languages: set[str]) -> str | None:
    real = [lang for lang in languages if lang.lower() not in _NEUTRAL_LANGUAGES]
    return real[0] if len(real) == 1 else None


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""


def _arch(file_name: str, title: str) -> str:
    for text in (file_name.lower().replace("_", " "), title.lower()):
        for pattern, arch in _ARCH_WORDS:
            if pattern.search(text):
                return arch
    return "neutral"


def known_ids(updates: Iterable[WsusUpdate]) -> set[str]:
    return {u.update_id for u in updates}
