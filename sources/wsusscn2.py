"""Microsoft's offline scan catalog, `wsusscn2.cab` (or the folder it was extracted to).

Layout: the outer cabinet holds `index.xml` and inner cabinets. `package.cab` holds
`package.xml`, the list of every update (UpdateId, RevisionId, categories, languages, EULA files,
SupersededBy revisions, bundle membership, payload file locations). The other cabinets hold one
file per revision and part: `c/<rev>` core (identity, type, relationships), `x/<rev>` extended
(KB, MSRC severity, reboot behaviour, files), `l/<lang>/<rev>` localized (title, description).
Which cabinet holds a revision is given by `index.xml`: the one with the largest RANGESTART not
above the revision id.

The whole catalog is read before anything is stored: a cabinet with a fragment missing is
refused as incomplete (one line naming the fragment), so a damaged download never leaves half a
catalog behind. Extraction uses `cabextract` (Debian package `cabextract`).
"""

from __future__ import annotations

import bisect
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml.ElementTree as DefusedET
from defusedxml import DefusedXmlException

from sources.records import ParsedDocument, PatchRecord, SourceError
from sources.wsus_metadata import (
    WsusUpdate,
    build_records,
    local,
    parse_date,
    parse_xml,
    read_update_xml,
)

CABEXTRACT = "cabextract"
EXTRACT_TIMEOUT = 3600
BUCKETS = "0123456789abcdef"
Progress = Callable[[str], None]


@dataclass
class _Cab:
    stem: str
    start: int | None  # RANGESTART; None for package.cab
    folder: Path | None = None
    parts: dict[str, Path] = field(default_factory=dict)  # "c", "x", "l" -> folder


@dataclass(slots=True)
class _Entry:
    """One <Update> of package.xml, with what only package.xml says."""

    update: WsusUpdate
    default_language: str
    software: bool
    bundled_by: list[int]
    superseded_by: list[int]


@dataclass
class Layout:
    """An extracted catalog: where index.xml, package.xml and each cabinet's folder are."""

    root: Path
    package_xml: Path
    cabs: list[_Cab]

    def fragment(self, part: str, revision: int, language: str | None = None) -> tuple[Path, str]:
        """(path, label) of a fragment; the label ("package3/x/456789") names it in errors."""
        ranged = [c for c in self.cabs if c.start is not None]
        starts = [c.start or 0 for c in ranged]
        index = bisect.bisect_right(starts, revision) - 1
        if index < 0:
            return Path("/nonexistent"), f"revision {revision} (no cabinet covers it)"
        cab = ranged[index]
        sub = part if language is None else f"{part}/{language}"
        label = f"{cab.stem}/{sub}/{revision}"
        base = cab.parts.get(part)
        if base is None or cab.folder is None:
            return Path("/nonexistent"), label
        folder = base if language is None else _child(base, language) or base / language
        return folder / str(revision), label


# --------------------------------------------------------------------------------------------
# Recognising and opening


def is_catalog(path: Path) -> bool:
    """A cabinet file (MSCF), or a folder with index.xml: what --msrc-source takes for this
    source, as opposed to a folder of CVRF documents."""
    if path.is_file():
        with path.open("rb") as handle:
            return handle.read(4) == b"MSCF"
    return path.is_dir() and _child(path, "index.xml") is not None


def catalog_hash(path: Path) -> str:
    """Identifies this exact catalog, to skip re-reading an unchanged one: the cabinet's bytes,
    or for a folder its index, package.xml and the names and sizes of all fragments."""
    digest = hashlib.sha256()
    if path.is_file():
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath) / name
            rel = file.relative_to(path).as_posix()
            digest.update(f"{rel}\0{file.stat().st_size}\n".encode())
            if name.lower() in ("index.xml", "package.xml"):
                digest.update(file.read_bytes())
    return digest.hexdigest()


@contextmanager
def open_catalog(path: Path, workdir: Path | None = None) -> Iterator[Layout]:
    """The catalog's extracted layout; a cabinet (outer or inner) is extracted into a temporary
    folder under `workdir`, removed on exit. An extracted folder is only read."""
    with ExitStack() as stack:
        scratch: list[Path] = []

        def temp() -> Path:
            if not scratch:
                base = workdir or Path(tempfile.gettempdir())
                base.mkdir(parents=True, exist_ok=True)
                scratch.append(Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="wsusscn2-", dir=base))))
            return scratch[0]

        if path.is_file():
            root = temp() / "catalog"
            extract(path, root)
        elif path.is_dir():
            root = path
        else:
            raise SourceError(f"{path}: no such file or folder")
        yield _layout(root, temp)


def extract(cab: Path, dest: Path) -> None:
    """Extract a cabinet with cabextract (lowercasing names, as WSUS treats them)."""
    if shutil.which(CABEXTRACT) is None:
        raise SourceError(
            "cabextract is not installed: install the cabextract package "
            "(apt-get install cabextract) or give the extracted folder instead"
        )
    dest.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [CABEXTRACT, "-q", "-L", "-d", str(dest), str(cab)],
            capture_output=True, timeout=EXTRACT_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        raise SourceError(f"{cab.name}: extraction took over an hour; giving up") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
        reason = detail[-1] if detail else f"exit code {done.returncode}"
        raise SourceError(f"{cab.name}: not a readable cabinet ({reason})")


def _layout(root: Path, temp: Callable[[], Path]) -> Layout:
    index = _child(root, "index.xml")
    if index is None:
        raise SourceError(f"{root.name}: no index.xml (not a wsusscn2 catalog)")
    cabs = _read_index(index.read_bytes())
    for cab in cabs:
        folder = _child(root, cab.stem)
        if folder is None or not folder.is_dir():
            packed = _child(root, cab.stem + ".cab")
            if packed is None:
                raise SourceError(
                    f"wsusscn2 is incomplete: index.xml lists {cab.stem}.cab, "
                    f"which is neither extracted nor present"
                )
            folder = temp() / cab.stem
            extract(packed, folder)
        cab.folder = folder
        for part in ("c", "x", "l"):
            found = _child(folder, part)
            if found is not None:
                cab.parts[part] = found
    package = next((c for c in cabs if c.start is None), None)
    package_xml = None
    for folder in ([package.folder] if package and package.folder else []) + [root]:
        package_xml = _child(folder, "package.xml")
        if package_xml:
            break
    if package_xml is None:
        raise SourceError("wsusscn2 is incomplete: package.xml is missing")
    return Layout(root, package_xml, sorted(cabs, key=lambda c: (c.start is not None,
                                                                 c.start or 0)))


def _read_index(data: bytes) -> list[_Cab]:
    root = parse_xml(data, "index.xml")
    cabs = []
    for item in root.iter():
        if local(item.tag).upper() != "CAB":
            continue
        name = (item.get("NAME") or item.get("Name") or "").strip()
        start = item.get("RANGESTART") or item.get("RangeStart")
        if not name.lower().endswith(".cab") or "/" in name or "\\" in name or ".." in name:
            raise SourceError(f"index.xml: invalid cabinet name {name!r}")
        if start is not None and not start.strip().isdigit():
            raise SourceError(f"index.xml: {name}: RANGESTART {start!r} is not a number")
        cabs.append(_Cab(stem=name[:-4].lower(), start=int(start) if start else None))
    if not cabs:
        raise SourceError("index.xml lists no cabinets")
    return cabs


def _child(folder: Path, name: str) -> Path | None:
    """A child by name, ignoring case (catalogs extracted on Windows keep `Index.xml`)."""
    exact = folder / name
    if exact.exists():
        return exact
    try:
        for entry in folder.iterdir():
            if entry.name.lower() == name.lower():
                return entry
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------------------------
# Reading


def read_catalog(layout: Layout, progress: Progress | None = None) -> list[PatchRecord]:
    """All installable updates as patch records. Raises SourceError (one line) when a part
    is unreadable or missing; nothing is returned half-read."""
    entries, locations = _read_package(layout.package_xml)
    if progress:
        progress(f"wsusscn2: package.xml lists {len(entries)} updates")
    by_revision = {e.update.revision_id: e for e in entries.values()}
    for entry in entries.values():
        entry.update.bundled_by = [by_revision[r].update.update_id
                                   for r in entry.bundled_by if r in by_revision]
        for rev in entry.superseded_by:
            newer = by_revision.get(rev)
            if newer is not None:
                newer.update.supersedes.add(entry.update.update_id)
    children_of: dict[str, list[str]] = {}
    for entry in entries.values():
        for parent in entry.update.bundled_by:
            children_of.setdefault(parent, []).append(entry.update.update_id)
    candidates = [e for e in entries.values() if _is_candidate(e)]
    chosen: dict[str, WsusUpdate] = {}
    for n, entry in enumerate(candidates, 1):
        if progress and n % 2000 == 0:
            progress(f"wsusscn2: update {n}/{len(candidates)}")
        update = entry.update
        _read_fragment(layout, "c", entry)
        if not update.is_software:
            continue  # a category or detectoid listed like a software update
        _read_fragment(layout, "x", entry)
        _read_fragment(layout, "l", entry, entry.default_language)
        chosen[update.update_id] = update
        update.bundled = [c for c in dict.fromkeys(
            update.bundled + children_of.get(update.update_id, [])) if c in entries]
        for child_id in update.bundled:
            child = entries[child_id]
            if child_id not in chosen:
                _read_fragment(layout, "x", child)
                child.update.update_type = child.update.update_type or "Software"
                chosen[child_id] = child.update
    for guid in _category_ids(chosen.values()):
        entry = entries.get(guid)
        if entry is None or guid in chosen:
            continue
        _read_fragment(layout, "l", entry, entry.default_language, required=False)
        entry.update.update_type = "Category"
        chosen[guid] = entry.update
    for update in chosen.values():
        for file in update.files:
            file.url = locations.get(file.digest)
    return build_records(chosen)


def documents(records: list[PatchRecord]) -> list[ParsedDocument]:
    """The records in up to 16 documents, bucketed by a hash of their key, each stored in its
    own transaction. Buckets are stable, so when Microsoft republishes the catalog only the
    buckets whose records changed are written again."""
    buckets: dict[str, list[PatchRecord]] = {}
    for record in records:
        bucket = hashlib.sha1(record.key.encode()).hexdigest()[0]
        buckets.setdefault(bucket, []).append(record)
    docs = []
    for bucket in sorted(buckets):
        patches = sorted(buckets[bucket], key=lambda r: r.key)
        digest = hashlib.sha256(repr(patches).encode()).hexdigest()
        dates = [p.release_date for p in patches if p.release_date]
        docs.append(ParsedDocument(key=f"wsusscn2/{bucket}", release_date=max(dates, default=None),
                                   content_hash=digest, patches=patches))
    return docs


def _is_candidate(entry: _Entry) -> bool:
    """What WSUS offers: software updates that are bundles (or carry a classification) and are
    not themselves inside a bundle. Detectoids and categories say IsSoftware="false"."""
    update = entry.update
    return entry.software and not entry.bundled_by and (
        update.is_bundle or bool(update.classification_ids))


def _category_ids(updates: Iterable[WsusUpdate]) -> set[str]:
    ids: set[str] = set()
    for update in updates:
        ids.update(update.product_ids)
        ids.update(update.classification_ids)
        ids.update(update.category_prereqs)
    return ids


def _read_fragment(layout: Layout, part: str, entry: _Entry, language: str | None = None,
                   required: bool = True) -> None:
    revision = entry.update.revision_id or 0
    path, label = layout.fragment(part, revision, language)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if not required:
            return
        raise SourceError(
            f"wsusscn2 is incomplete: fragment {label} of update {entry.update.update_id} "
            "is missing; nothing was stored"
        ) from None
    except OSError as exc:
        raise SourceError(f"wsusscn2: cannot read {label}: {exc.strerror}") from None
    read_update_xml(parse_xml(data, f"wsusscn2 {label}", fragment=True), entry.update)


def _read_package(path: Path) -> tuple[dict[str, _Entry], dict[str, str]]:
    """Stream package.xml (hundreds of MB for the real catalog) into entries and file URLs."""
    entries: dict[str, _Entry] = {}
    locations: dict[str, str] = {}
    try:
        for _event, element in DefusedET.iterparse(str(path), events=("end",)):
            name = local(element.tag)
            if name == "Update":
                entry = _entry(element)
                entries[entry.update.update_id] = entry
                element.clear()
            elif name == "FileLocation":
                if element.get("Id") and element.get("Url"):
                    locations[element.get("Id", "")] = element.get("Url", "")
                element.clear()
    except DefusedXmlException as exc:
        raise SourceError(f"package.xml: refused unsafe XML: {_one_line(exc)}") from None
    except ParseError as exc:
        raise SourceError(f"package.xml: malformed XML: {_one_line(exc)}") from None
    if not entries:
        raise SourceError("package.xml lists no updates")
    return entries, locations


def _entry(element: Element) -> _Entry:
    uid = (element.get("UpdateId") or "").lower()
    revision = element.get("RevisionId") or ""
    if not uid or not revision.isdigit():
        raise SourceError(f"package.xml: an Update lacks UpdateId or RevisionId ({uid or '?'})")
    update = WsusUpdate(update_id=uid, revision_id=int(revision),
                        created=parse_date(element.get("CreationDate")),
                        is_bundle=element.get("IsBundle") == "true")
    bundled_by: list[int] = []
    superseded_by: list[int] = []
    for child in element:
        name = local(child.tag)
        if name == "Categories":
            for category in child:
                kind, guid = category.get("Type"), (category.get("Id") or "").lower()
                if kind == "UpdateClassification" and guid:
                    update.classification_ids.append(guid)
                elif kind == "Product" and guid:
                    update.product_ids.append(guid)
        elif name == "Languages":
            update.languages.update(x.get("Name", "") for x in child if x.get("Name"))
        elif name == "EulaFiles":
            update.eula = update.eula or len(child) > 0
        elif name in ("BundledBy", "SupersededBy"):
            revs = [int(r.get("Id", "")) for r in child if (r.get("Id") or "").isdigit()]
            (bundled_by if name == "BundledBy" else superseded_by).extend(revs)
        elif name == "PayloadFiles":
            update.payload_digests.extend(f.get("Id", "") for f in child if f.get("Id"))
    return _Entry(update=update, default_language=element.get("DefaultLanguage") or "en",
                  software=element.get("IsSoftware") != "false",
                  bundled_by=bundled_by, superseded_by=superseded_by)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
