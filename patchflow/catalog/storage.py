"""Shared storage for content files and report files, so every node of a multi-machine install
reads and writes the same ones.

`[storage] url` in patchflow.toml (or PATCHFLOW_STORAGE_URL) names any fsspec filesystem:
`sftp://user@host:22/srv/patchflow`, `s3://bucket/prefix`, `file:///mnt/shared/patchflow`.
Unset (the default), nothing here is used and content and reports stay in the local folders.
A password never sits in the URL or in patchflow.toml: it comes from PATCHFLOW_STORAGE_PASSWORD
(an SSH key from `[storage] key_file` or PATCHFLOW_STORAGE_KEY_FILE; S3 keys from the usual AWS
variables or instance role), and `[storage] options` passes further settings to the filesystem
(an S3-compatible `endpoint_url`, for instance).

Files are written under a temporary name and renamed into place, so a reader on another node
never sees half a file. Every failure is one line naming the storage, never a traceback.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

from patchflow import config
from patchflow.errors import UserError, one_line

# Protocols whose login takes a password argument named `password`.
_PASSWORD_PROTOCOLS = frozenset({"sftp", "ssh", "ftp", "smb", "webdav"})
_KEY_PROTOCOLS = frozenset({"sftp", "ssh"})
CONNECT_TIMEOUT = 15.0
T = TypeVar("T")


class StorageError(UserError):
    """The storage is misconfigured or cannot be reached; the message is one line."""


def _failures() -> tuple[type[BaseException], ...]:
    """What a filesystem raises when its server is away or refuses: OSError for most, plus
    paramiko's own errors for sftp, which are not OSErrors."""
    kinds: list[type[BaseException]] = [OSError, EOFError, ValueError, RuntimeError]
    try:
        import paramiko

        kinds.append(paramiko.SSHException)
    except ImportError:
        pass
    return tuple(kinds)


@dataclass(frozen=True)
class Storage:
    """A folder on some filesystem; keys are '/'-separated paths below it."""

    fs: Any  # fsspec.AbstractFileSystem: fsspec has no type hints to speak of
    root: str
    url: str  # as configured (never holds a password), for messages

    def path(self, key: str) -> str:
        return posixpath.join(self.root, key) if self.root else key

    def where(self, key: str) -> str:
        """The place of `key` for a message: the storage URL and the key."""
        return f"{self.url.rstrip('/')}/{key}"

    def _call(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except FileNotFoundError:
            raise
        except StorageError:
            raise
        except _failures() as exc:
            # The next use connects afresh rather than reusing a connection that broke.
            self.fs.clear_instance_cache()
            raise StorageError(f"storage {self.url}: {what} failed: {one_line(exc)}") from None

    def exists(self, key: str) -> bool:
        return bool(self._call(f"checking {key}", lambda: self.fs.exists(self.path(key))))

    def size(self, key: str) -> int | None:
        """Its size, or None when there is no such file."""
        try:
            info = self._call(f"reading {key}", lambda: self.fs.info(self.path(key)))
        except FileNotFoundError:
            return None
        return int(info["size"]) if info.get("type") == "file" else None

    def open(self, key: str) -> IO[bytes]:
        """For reading; FileNotFoundError when there is no such file."""
        return self._call(f"opening {key}", lambda: self.fs.open(self.path(key), "rb"))

    def read_chunks(self, key: str, chunk: int = 1 << 16) -> Any:
        """The file's bytes in chunks (for a streamed response); storage failures mid-read
        become a StorageError."""
        handle = self.open(key)
        try:
            while True:
                block = self._call(f"reading {key}", lambda: handle.read(chunk))
                if not block:
                    break
                yield block
        finally:
            handle.close()

    def files(self, folder: str) -> list[str]:
        """Names of the files directly in `folder` (empty when it does not exist)."""
        try:
            entries = self._call(f"listing {folder}",
                                 lambda: self.fs.ls(self.path(folder), detail=True))
        except FileNotFoundError:
            return []
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries
                      if e.get("type") == "file")

    def put_file(self, local: Path, key: str, replace: bool = True) -> None:
        """Upload under a temporary name beside the target, then rename it into place: a
        reader sees the whole file or none. Without `replace`, a file another node put there
        meanwhile is kept (content files are named by their hash: it is the same file)."""
        target = self.path(key)
        parent = posixpath.dirname(target)
        temp = posixpath.join(parent, f".{posixpath.basename(target)}.{uuid.uuid4().hex}.part")

        def upload() -> None:
            self.fs.makedirs(parent, exist_ok=True)
            self.fs.put_file(str(local), temp)
            try:
                try:
                    self.fs.mv(temp, target)
                except OSError:
                    if not self.fs.exists(target):
                        raise
                    if not replace:  # sftp's rename does not replace an existing file
                        self.fs.rm_file(temp)
                        return
                    self.fs.rm_file(target)
                    self.fs.mv(temp, target)
            except BaseException:
                if self.fs.exists(temp):
                    self.fs.rm_file(temp)
                raise

        self._call(f"writing {key}", upload)

    def move(self, key: str, new_key: str) -> None:
        def move() -> None:
            self.fs.makedirs(posixpath.dirname(self.path(new_key)), exist_ok=True)
            self.fs.mv(self.path(key), self.path(new_key))

        self._call(f"moving {key}", move)

    def put_tree(self, local: Path, prefix: str) -> int:
        """Every file under `local` to `prefix/<relative path>`; returns the count."""
        count = 0
        for path in sorted(local.rglob("*")):
            if path.is_file():
                self.put_file(path, f"{prefix}/{path.relative_to(local).as_posix()}")
                count += 1
        return count


def configured() -> Storage | None:
    """The storage `[storage] url` names, connected; None when it is not set."""
    try:
        url = config.storage_url()
    except config.ConfigError as exc:
        raise StorageError(str(exc)) from None
    if url is None:
        return None
    options = config.setting("storage", "options", {})
    if not isinstance(options, dict):
        raise StorageError("[storage] options must be a table (options = { key = \"value\" })")
    key_file = os.environ.get("PATCHFLOW_STORAGE_KEY_FILE") or config.setting(
        "storage", "key_file")
    return open_storage(url, password=os.environ.get("PATCHFLOW_STORAGE_PASSWORD"),
                        key_file=str(key_file) if key_file else None, options=options)


def check_url(url: str) -> str:
    """The URL's protocol after checking what can be checked without connecting."""
    parts = urlsplit(url)
    if "://" not in url or not parts.scheme:
        raise StorageError(f"[storage] url {url!r} is not a URL: use e.g. "
                           "sftp://user@host/path, s3://bucket/prefix or file:///path")
    if parts.password is not None:
        raise StorageError("[storage] url must not hold a password: put it in "
                           "PATCHFLOW_STORAGE_PASSWORD")
    return parts.scheme.lower()


def open_storage(url: str, password: str | None = None, key_file: str | None = None,
                 options: dict[str, Any] | None = None) -> Storage:
    """Connect to `url` (raises StorageError, one line, when the URL is bad or the storage
    cannot be reached)."""
    from fsspec.core import url_to_fs
    from fsspec.registry import known_implementations, registry

    protocol = check_url(url)
    if protocol not in known_implementations and protocol not in registry:
        raise StorageError(f"[storage] url: unknown protocol {protocol}:// (use e.g. sftp://, "
                           "s3://, file:// or another fsspec filesystem)")
    kwargs: dict[str, Any] = dict(options or {})
    if protocol in _PASSWORD_PROTOCOLS and password:
        kwargs.setdefault("password", password)
    if protocol in _KEY_PROTOCOLS:
        if key_file:
            if not Path(key_file).expanduser().is_file():
                raise StorageError(f"storage key file {key_file} does not exist")
            kwargs.setdefault("key_filename", str(Path(key_file).expanduser()))
        kwargs.setdefault("timeout", CONNECT_TIMEOUT)
        kwargs.setdefault("banner_timeout", CONNECT_TIMEOUT)
        kwargs.setdefault("auth_timeout", CONNECT_TIMEOUT)
    try:
        fs, root = url_to_fs(url, **kwargs)
    except ImportError as exc:
        extra = " (pip install 'patchflow[sftp]')" if protocol in _KEY_PROTOCOLS else ""
        raise StorageError(f"storage {url}: {protocol}:// needs a package that is not "
                           f"installed: {one_line(exc)}{extra}") from None
    except StorageError:
        raise
    except (*_failures(), TypeError) as exc:
        raise StorageError(f"cannot reach storage {url}: {one_line(exc)}") from None
    storage = Storage(fs=fs, root=str(root).rstrip("/"), url=url)
    try:
        storage._call("creating its folder", lambda: fs.makedirs(storage.root or "/",
                                                                 exist_ok=True))
    except FileNotFoundError as exc:
        raise StorageError(f"storage {url}: {one_line(exc)}") from None
    return storage
