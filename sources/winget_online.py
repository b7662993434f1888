"""The online winget source: the pre-indexed source package plus one manifest download per version.

The winget community source (`https://cdn.winget.microsoft.com/cache`, the winget client's
default) publishes `source.msix`, a zip whose `Public/index.db` is a SQLite index in the "V1"
schema of microsoft/winget-cli (src/AppInstallerRepositoryCore/Microsoft/Schema/1_x):

- `ids(rowid, id)` and `versions(rowid, version)` hold the values a `manifest` row points at
  (`manifest.id`, `manifest.version` are rowids; `names`, `monikers`, `channels` likewise);
- `pathparts(rowid, parent, pathpart)` is a tree of path segments; `manifest.pathpart` is the
  leaf, and walking `parent` up to NULL gives the manifest's relative path, such as
  `manifests/7/7zip/7zip/24.08/<...>.yaml`, downloaded from `{source}/{path}`;
- from schema 1.3, `manifest.hash` is the SHA-256 (32 raw bytes) of that manifest file, which
  the winget client checks after download and so do we;
- `metadata(name, value)` carries `majorVersion`/`minorVersion`.

Each row's file is one merged manifest (all of a version's fields in one YAML document), parsed
by sources.winget.parse_manifest_files like any other manifest. Any HTTP(S) URL serving the same
layout works as a source (an internal mirror). The newer `source2.msix` (V2 schema, per-package
`versionData.mszyml`) is not read here.

The source package is downloaded once and kept in-process per source URL: for FRESH_SECONDS it is
reused without a request (a sync asks for each configured package in turn), after that it is
revalidated with If-None-Match / If-Modified-Since. A failed download is remembered for
FAILURE_SECONDS, so an unreachable source fails every package at once instead of retrying with
backoff once per package.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import requests

from patchflow.http import describe_error
from sources.records import ParsedDocument, PatchRecord, SourceError
from sources.winget import link_versions, parse_manifest_files

INDEX_PACKAGE = "source.msix"
INDEX_MEMBER = "Public/index.db"
FRESH_SECONDS = 600.0
FAILURE_SECONDS = 60.0
INDEX_TIMEOUT = (10.0, 300.0)  # (connect, read): the package is tens of MB on a slow link
MANIFEST_TIMEOUT = (10.0, 60.0)
MAX_INDEX_BYTES = 2 * 1024**3  # refuse a "zip bomb" index.db
MAX_MANIFEST_BYTES = 16 * 1024**2
_REQUIRED_TABLES = ("manifest", "ids", "versions", "pathparts")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
# RFC 3986 pchar: kept as is, so `Notepad++` stays `Notepad++` as in the winget-pkgs layout.
_PATH_SAFE = "!$&'()*+,;=:@-._~"


@dataclass
class _Index:
    db: Path  # extracted index.db
    etag: str | None
    last_modified: str | None
    checked: float  # time.monotonic() of the last download or revalidation


@dataclass(frozen=True)
class _Entry:
    version: str
    path: str  # relative to the source URL
    sha256: str | None  # lowercase hex, None when the index has no hash


_lock = threading.Lock()
_indexes: dict[str, _Index] = {}
_failures: dict[str, tuple[float, str]] = {}


def fetch_package(http: requests.Session, source: str, package_id: str) -> ParsedDocument:
    """Every version of `package_id` in the winget source at `source`, linked newest-first.

    The document key is `package_id` as configured; its content hash covers the manifests
    downloaded for it (paths and bytes), so an unchanged package is skipped by the sync.
    Versions whose manifest cannot be parsed are left out with a one-line reason in
    `errors`; anything that makes the source untrustworthy or unreachable (download failure,
    bad package, unknown schema, hash mismatch) raises SourceError for the whole package, so
    what is stored stays as it was and the next sync retries.
    """
    base = source.rstrip("/")
    entries = _lookup(http, base, package_id)
    if not entries:
        raise SourceError(f"{package_id}: not found in the winget source {base}")

    files: dict[str, bytes] = {}
    patches: list[PatchRecord] = []
    errors: list[str] = []
    for entry in entries:
        data = _download_manifest(http, base, package_id, entry)
        files[entry.path] = data
        try:
            doc = parse_manifest_files({entry.path.rsplit("/", 1)[-1]: data})
        except SourceError as exc:
            errors.append(str(exc))
            continue
        errors.extend(doc.errors)
        patch = doc.patches[0]
        if (patch.package_id or "").casefold() != package_id.casefold():
            errors.append(f"{patch.key}: PackageIdentifier differs from {package_id}; skipped")
        elif any(p.key == patch.key for p in patches):
            errors.append(f"{patch.key}: listed twice in the index; second copy skipped")
        else:
            patches.append(patch)
    if not patches:
        raise SourceError(f"{package_id}: no usable version ({errors[0]})")
    patches = link_versions(patches)
    return ParsedDocument(
        key=package_id,
        release_date=patches[-1].release_date,
        content_hash=_hash_files(files),
        patches=patches,
        errors=errors,
    )


def clear_cache() -> None:
    """Forget downloaded source packages and remembered failures (tests, long-lived workers)."""
    with _lock:
        for index in _indexes.values():
            _remove(index.db)
        _indexes.clear()
        _failures.clear()


atexit.register(clear_cache)


# --------------------------------------------------------------------------------------------
# The source package and its index


def _lookup(http: requests.Session, base: str, package_id: str) -> list[_Entry]:
    with _lock:
        try:
            db = _index_file(http, base)
        except SourceError as exc:
            raise SourceError(f"{package_id}: {exc}") from None
        try:
            with contextlib.closing(_open(db)) as con:
                return _entries(con, package_id)
        except sqlite3.Error as exc:
            raise SourceError(
                f"{package_id}: winget index {base}/{INDEX_PACKAGE} is unreadable: "
                f"{_one_line(exc)}"
            ) from None


def _index_file(http: requests.Session, base: str) -> Path:
    """The current index.db of `base`, downloading or revalidating it when due."""
    now = time.monotonic()
    failed = _failures.get(base)
    if failed and now - failed[0] < FAILURE_SECONDS:
        raise SourceError(failed[1])
    cached = _indexes.get(base)
    if cached and now - cached.checked < FRESH_SECONDS:
        return cached.db
    try:
        index = _download_index(http, base, cached)
    except SourceError as exc:
        _failures[base] = (now, str(exc))
        raise
    _failures.pop(base, None)
    if cached and cached.db != index.db:
        _remove(cached.db)
    _indexes[base] = index
    return index.db


def _download_index(http: requests.Session, base: str, cached: _Index | None) -> _Index:
    url = f"{base}/{INDEX_PACKAGE}"
    headers = {}
    if cached and cached.etag:
        headers["If-None-Match"] = cached.etag
    if cached and cached.last_modified:
        headers["If-Modified-Since"] = cached.last_modified
    fd, name = tempfile.mkstemp(prefix="patchflow-winget-", suffix=".msix")
    msix = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with http.get(url, headers=headers, timeout=INDEX_TIMEOUT, stream=True) as resp:
                    if resp.status_code == 304 and cached:
                        cached.checked = time.monotonic()
                        return cached
                    resp.raise_for_status()
                    etag, modified = resp.headers.get("ETag"), resp.headers.get("Last-Modified")
                    for chunk in resp.iter_content(1024 * 1024):
                        out.write(chunk)
            except requests.RequestException as exc:
                raise SourceError(f"winget index {url}: {_describe(exc)}") from None
        db = _extract_index(msix, url)
    finally:
        _remove(msix)
    try:
        with contextlib.closing(_open(db)) as con:
            _check_schema(con, url)
    except sqlite3.Error as exc:
        _remove(db)
        raise SourceError(f"winget index {url}: {INDEX_MEMBER} is unreadable: "
                          f"{_one_line(exc)}") from None
    except SourceError:
        _remove(db)
        raise
    return _Index(db=db, etag=etag, last_modified=modified, checked=time.monotonic())


def _extract_index(msix: Path, url: str) -> Path:
    fd, name = tempfile.mkstemp(prefix="patchflow-winget-", suffix=".db")
    db = Path(name)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(msix) as package:
            try:
                info = package.getinfo(INDEX_MEMBER)
            except KeyError:
                raise SourceError(f"winget index {url}: no {INDEX_MEMBER} in the package") from None
            if info.file_size > MAX_INDEX_BYTES:
                raise SourceError(f"winget index {url}: {INDEX_MEMBER} is implausibly large "
                                  f"({info.file_size} bytes)")
            with package.open(info) as member:
                shutil.copyfileobj(member, out, 1024 * 1024)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, ValueError) as exc:
        _remove(db)
        raise SourceError(f"winget index {url}: not a valid source package "
                          f"({_one_line(exc)})") from None
    except BaseException:
        _remove(db)
        raise
    return db


def _open(db: Path) -> sqlite3.Connection:
    # immutable: the file never changes while cached, and no -wal/-shm files appear beside it.
    return sqlite3.connect(f"{db.as_uri()}?mode=ro&immutable=1", uri=True)


def _check_schema(con: sqlite3.Connection, url: str) -> None:
    tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "metadata" in tables:
        meta = dict(con.execute("SELECT name, value FROM metadata").fetchall())
        major = str(meta.get("majorVersion", "1"))
        if major != "1":
            raise SourceError(
                f"winget index {url}: schema {major}.{meta.get('minorVersion', '?')} is not "
                "supported (patchflow reads the V1 index of source.msix)"
            )
    missing = [t for t in _REQUIRED_TABLES if t not in tables]
    if missing:
        raise SourceError(f"winget index {url}: not a V1 winget index "
                          f"(no table {', '.join(missing)})")


def _entries(con: sqlite3.Connection, package_id: str) -> list[_Entry]:
    columns = {row[1] for row in con.execute("PRAGMA table_info(manifest)")}
    hash_column = "m.hash" if "hash" in columns else "NULL"
    rows = con.execute(
        f"SELECT v.version, m.pathpart, {hash_column} FROM manifest AS m "
        "JOIN ids AS i ON m.id = i.rowid JOIN versions AS v ON m.version = v.rowid "
        "WHERE i.id = ? COLLATE NOCASE ORDER BY m.rowid",
        (package_id,),
    ).fetchall()
    entries = []
    for version, leaf, digest in rows:
        label = f"{package_id}@{version}"
        entries.append(_Entry(str(version), _path(con, leaf, label), _digest(digest, label)))
    return entries


def _path(con: sqlite3.Connection, leaf: object, label: str) -> str:
    """Walk pathparts from the leaf up to the root; refuse anything that is not a plain path."""
    parts: list[str] = []
    current = leaf
    for _ in range(64):
        row = con.execute("SELECT parent, pathpart FROM pathparts WHERE rowid = ?",
                          (current,)).fetchone()
        if row is None:
            raise SourceError(f"{label}: the index names no manifest path (broken pathparts)")
        parent, part = row
        if not isinstance(part, str) or part in ("", ".", "..") or "/" in part or "\\" in part:
            raise SourceError(f"{label}: the index gives an unusable manifest path part {part!r}")
        parts.append(part)
        if parent is None:
            return "/".join(reversed(parts))
        current = parent
    raise SourceError(f"{label}: the index's manifest path is too deep or loops")


def _digest(value: object, label: str) -> str | None:
    if value is None or value in (b"", ""):
        return None
    if isinstance(value, bytes) and len(value) == 32:
        return value.hex()
    if isinstance(value, str) and _HEX64.match(value):
        return value.lower()
    raise SourceError(f"{label}: the index's manifest hash is not a SHA-256")


# --------------------------------------------------------------------------------------------
# Manifests


def _download_manifest(
    http: requests.Session, base: str, package_id: str, entry: _Entry
) -> bytes:
    url = f"{base}/{quote(entry.path, safe=_PATH_SAFE + '/')}"
    label = f"{package_id}@{entry.version}"
    try:
        with http.get(url, timeout=MANIFEST_TIMEOUT, stream=True) as resp:
            resp.raise_for_status()
            data = bytearray()
            for chunk in resp.iter_content(256 * 1024):
                data += chunk
                if len(data) > MAX_MANIFEST_BYTES:
                    raise SourceError(f"{label}: manifest {url} is larger than "
                                      f"{MAX_MANIFEST_BYTES} bytes")
    except requests.RequestException as exc:
        raise SourceError(f"{label}: manifest download failed: {_describe(exc)}") from None
    if entry.sha256:
        actual = hashlib.sha256(data).hexdigest()
        if actual != entry.sha256:
            raise SourceError(
                f"{label}: manifest {entry.path} does not match the index's SHA-256 "
                f"(got {actual[:12]}..., index says {entry.sha256[:12]}...)"
            )
    return bytes(data)


def _hash_files(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode("utf-8") + b"\0" + str(len(files[name])).encode() + b"\0")
        digest.update(files[name])
    return digest.hexdigest()


def _describe(exc: requests.RequestException) -> str:
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ContentDecodingError)):
        return "the download was cut short (connection closed before the end)"
    return describe_error(exc)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__
