"""Content store: installers and update files addressed by SHA-256.

Layout `content/sha256/ab/abcdef…`. A download goes to `content/tmp/<sha>.part`, resumes from
there after an interruption (HTTP Range), is hash-checked, and only then renamed into place, so
a file under sha256/ is always complete and always what its name says.

A file can still change after it was stored (disk corruption, someone with access to the
folder). So a stored file is hash-checked again before it is used the first time after start
and whenever its size or modification time changed since the last check; a file that no longer
matches its name is moved to `content/quarantine/` (kept for inspection, never offered again)
and the caller gets a ContentTampered error naming it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

import requests

from patchflow import config
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
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or config.content_dir()

    def path_for(self, sha256: str) -> Path:
        sha = validate_sha256(sha256)
        return self.root / "sha256" / sha[:2] / sha

    def has(self, sha256: str) -> bool:
        """Whether a good copy is stored: a copy that fails its hash check is quarantined and
        counts as absent, so the callers that fetch on demand fetch it again."""
        try:
            return self.verified_path(sha256) is not None
        except ContentTampered:
            return False

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def verified_path(self, sha256: str) -> Path | None:
        """The stored file after checking its hash (once per process, and again whenever its
        size or mtime changed); None when it is not stored. Raises ContentTampered after
        moving a file that does not match its name to the quarantine folder."""
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

    def _commit(self, part: Path, sha: str) -> Path:
        final = self.path_for(sha)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        signature = _signature(final)
        if signature is not None:  # just hashed while it was written
            _verified[final] = signature
        return final

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
