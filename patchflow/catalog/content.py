"""Content store: installers and update files addressed by SHA-256.

Layout `content/sha256/ab/abcdef…`. A download goes to `content/tmp/<sha>.part`, resumes from
there after an interruption (HTTP Range), is hash-checked, and only then renamed into place, so
a file under sha256/ is always complete and always what its name says.

A file can still change after it was stored (disk corruption, someone with access to the
folder). So a stored file is hash-checked again before it is used the first time after start
and whenever its size or modification time changed since the last check; a file that no longer
matches its name is moved to `content/quarantine/` (kept for inspection, never offered again)
and the caller gets a ContentTampered error naming it.

With a shared storage (`[storage] url`, patchflow/catalog/storage.py) the storage holds the store
every node uses, at `<storage>/content/sha256/ab/abcdef…`, and the local folder is this node's
verified copy of what it served or fetched. A file is stored locally first (hash-checked as
above), then uploaded under a temporary name and renamed into place on the storage. A file
this node does not have yet is read from the storage into the local folder while it is
hashed, and kept only when it matches its name: a file changed on the storage is moved to the
storage's `content/quarantine/` and refused like a local one, and what is served or run is
always the bytes that were hashed, however the storage changes afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import requests

from patchflow import config
from patchflow.catalog.storage import Storage, StorageError, configured
from patchflow.http import TIMEOUT, describe_error

_SHA = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 16  # small enough that an interrupted read loses little


class ContentError(Exception):
    """A file could not be stored: unreachable, or not the file the catalog promised."""


class ContentTampered(ContentError):
    """A stored file no longer has the hash it is stored under; it was quarantined."""


# Files whose hash was checked in this process, with their stat signature at that time: a file
# is re-hashed only when it changes, so serving a large installer many times costs one hash.
# The signature holds ctime and inode besides size and mtime: an edit that restores the mtime
# (touch -r) or swaps in another file still changes them.
_verified: dict[Path, tuple[int, ...]] = {}
_verify_locks: dict[Path, threading.Lock] = {}
_verify_guard = threading.Lock()
_pull_locks: dict[str, threading.Lock] = {}


def _signature(path: Path) -> tuple[int, ...] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino


def file_sha256(path: Path) -> str:
    """Streamed, so a multi-gigabyte installer is never held in memory (backups use it too)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def validate_sha256(sha256: str) -> str:
    value = sha256.lower()
    if not _SHA.match(value):
        raise ContentError(f"invalid SHA-256 {sha256!r}: expected 64 hex digits")
    return value


class ContentStore:
    def __init__(self, root: Path | None = None,
                 storage: Storage | Literal["config"] | None = "config") -> None:
        """`storage` "config" uses `[storage] url` (none when unset). It connects on first
        use, so a store made where a storage error cannot be reported yet does not fail."""
        self.root = root or config.content_dir()
        self._storage = storage

    @property
    def storage(self) -> Storage | None:
        """The shared storage, None without one; ContentError (one line) when the setting
        is bad or the storage cannot be reached."""
        if self._storage == "config":
            try:
                self._storage = configured()
            except StorageError as exc:
                raise ContentError(str(exc)) from None
        return self._storage

    def path_for(self, sha256: str) -> Path:
        sha = validate_sha256(sha256)
        return self.root / "sha256" / sha[:2] / sha

    def has(self, sha256: str) -> bool:
        """Whether a good copy is stored: a copy that fails its hash check is quarantined and
        counts as absent, so the callers that fetch on demand fetch it again. So does a file
        on a storage that cannot be reached now: storing it again then says why it failed."""
        try:
            return self.verified_path(sha256) is not None
        except ContentError:
            return False

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def verified_path(self, sha256: str) -> Path | None:
        """The stored file after checking its hash (once per process, and again whenever its
        size or mtime changed); None when it is not stored. Raises ContentTampered after
        moving a file that does not match its name to the quarantine folder. With a shared
        storage, a file not held here is read from there (and hash-checked) first."""
        if self.storage is None:
            return self._verified_local(sha256)
        try:
            local = self._verified_local(sha256)
        except ContentTampered:
            local = None  # this node's copy went bad: the storage's is read again
        return local if local is not None else self._pull(validate_sha256(sha256))

    def _verified_local(self, sha256: str) -> Path | None:
        path = self.path_for(sha256)
        signature = _signature(path)
        if signature is None or not path.is_file():
            return None
        if _verified.get(path) == signature:
            return path
        with _verify_guard:
            lock = _verify_locks.setdefault(path, threading.Lock())
        with lock:
            signature = _signature(path)
            if signature is None:
                return None
            if _verified.get(path) == signature:
                return path
            actual = file_sha256(path)
            if actual == path.name and _signature(path) == signature:
                _verified[path] = signature
                return path
            _verified.pop(path, None)
            moved = self._quarantine(path)
        raise ContentTampered(
            f"content file {path.name} failed its SHA-256 check (the file now hashes to "
            f"{actual}): moved to {moved}, not served")

    def _quarantine(self, path: Path) -> Path:
        target = self.quarantine_dir / f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # another process moved it first
            os.replace(path, target)
        return target

    def _part(self, sha: str) -> Path:
        return self.root / "tmp" / f"{sha}.part"

    def put_bytes(self, data: bytes, sha256: str) -> Path:
        sha = validate_sha256(sha256)
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise ContentError(f"SHA-256 mismatch: expected {sha}, got {actual}")
        part = self._part(sha)
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(data)
        return self._commit(part, sha)

    def _commit(self, part: Path, sha: str, push: bool = True) -> Path:
        shared = self.storage if push else None  # an unreachable one fails before the rename
        final = self.path_for(sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        signature = _signature(final)
        if signature is not None:  # just hashed while it was written
            _verified[final] = signature
        if shared is not None:
            self._push(final, sha)
        return final

    # --- the shared storage -------------------------------------------------------------

    @staticmethod
    def _key(sha: str) -> str:
        return f"content/sha256/{sha[:2]}/{sha}"

    def _push(self, local: Path, sha: str) -> None:
        """Upload a verified file unless the storage has it; a stored copy of another size is
        quarantined there and replaced. When the upload fails the local copy goes too: a
        file counts as stored only once every node can read it, so the next attempt uploads
        it again rather than finding it here and never sharing it."""
        storage = self.storage
        assert storage is not None
        key = self._key(sha)
        try:
            size = storage.size(key)
            if size == local.stat().st_size:
                return
            if size is not None:
                self._quarantine_remote(sha)
            storage.put_file(local, key, replace=False)
        except (StorageError, ContentError) as exc:
            _verified.pop(local, None)
            local.unlink(missing_ok=True)
            raise ContentError(str(exc)) from None

    def _quarantine_remote(self, sha: str) -> str:
        assert self.storage is not None
        target = f"content/quarantine/{sha}.{time.strftime('%Y%m%dT%H%M%S')}"
        with contextlib.suppress(FileNotFoundError):  # another node moved it first
            self.storage.move(self._key(sha), target)
        return self.storage.where(target)

    def _pull(self, sha: str) -> Path | None:
        """Copy the storage's file here while hashing it; None when the storage has none.
        Raises ContentTampered (after quarantining it on the storage) when it does not hash
        to its name."""
        assert self.storage is not None
        key = self._key(sha)
        with _verify_guard:
            lock = _pull_locks.setdefault(sha, threading.Lock())
        with lock:
            try:
                local = self._verified_local(sha)
            except ContentTampered:
                local = None
            if local is not None:  # another thread pulled it meanwhile
                return local
            part = self.root / "tmp" / f"{sha}.{uuid.uuid4().hex}.pull"
            part.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            try:
                try:
                    with part.open("wb") as out:
                        for block in self.storage.read_chunks(key, CHUNK):
                            out.write(block)
                            digest.update(block)
                except FileNotFoundError:
                    return None
                actual = digest.hexdigest()
                if actual != sha:
                    moved = self._quarantine_remote(sha)
                    raise ContentTampered(
                        f"content file {sha} on the storage failed its SHA-256 check (it "
                        f"hashes to {actual}): moved to {moved}, not served")
                return self._commit(part, sha, push=False)
            except StorageError as exc:
                raise ContentError(str(exc)) from None
            finally:
                part.unlink(missing_ok=True)

    def download(
        self,
        url: str,
        sha256: str,
        session: requests.Session | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        """Fetch `url` into the store unless present; resume a partial download; verify the hash.

        A file whose hash does not match is deleted and never renamed into the store.
        """
        sha = validate_sha256(sha256)
        if self.has(sha):
            return self.path_for(sha)
        session = session or requests.Session()
        part = self._part(sha)
        part.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        offset = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            with session.get(url, headers=headers, stream=True, timeout=TIMEOUT) as response:
                if response.status_code == 416:  # the part is already complete
                    response.close()
                    offset, headers = 0, {}
                    part.unlink()
                    return self.download(url, sha, session, progress)
                response.raise_for_status()
                if offset and response.status_code == 206:
                    with part.open("rb") as existing:
                        for block in iter(lambda: existing.read(CHUNK), b""):
                            digest.update(block)
                    mode = "ab"
                else:
                    offset, mode = 0, "wb"
                length = response.headers.get("Content-Length")
                total = offset + int(length) if length and length.isdigit() else None
                done = offset
                with part.open(mode) as out:
                    for block in response.iter_content(CHUNK):
                        out.write(block)
                        digest.update(block)
                        done += len(block)
                        if progress:
                            progress(done, total)
        except requests.RequestException as exc:
            raise ContentError(f"download of {url} failed: {describe_error(exc)}") from None
        actual = digest.hexdigest()
        if actual != sha:
            part.unlink(missing_ok=True)
            raise ContentError(
                f"SHA-256 mismatch for {url}: catalog says {sha}, file is {actual}"
            )
        return self._commit(part, sha)
