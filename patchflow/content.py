"""Content store: installers and update files addressed by SHA-256.

Layout `content/sha256/ab/abcdef…`. A download goes to `content/tmp/<sha>.part`, resumes from
there after an interruption (HTTP Range), is hash-checked, and only then renamed into place, so
a file under sha256/ is always complete and always what its name says.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import requests

from patchflow import config
from patchflow.http import TIMEOUT, describe_error

_SHA = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1 << 16  # small enough that an interrupted read loses little


class ContentError(Exception):
    """A file could not be stored: unreachable, or not the file the catalog promised."""


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
        return self.path_for(sha256).is_file()

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
