"""Backups kept on the server, for the console: PATCHFLOW_HOME/backups/NAME.exp.

Creating one, checking an uploaded one and restoring one all call patchflow.ops.backup, the
functions behind `patchflow backup` and `patchflow restore`, so the console checks exactly what
the CLI checks (format, schema revision, every member's SHA-256, safe member names, the
passphrase of an encrypted archive) before the database is touched. Only names this module
gives out (`NAME.exp` in that folder) are ever opened: a request cannot point elsewhere.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path
from typing import Any

from models.db import get_engine
from patchflow import config
from patchflow.errors import NotFoundError, UserError
from patchflow.ops import backup, backup_crypto

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.exp$")


def backups_dir() -> Path:
    return config.home() / "backups"


def backup_path(name: str) -> Path:
    """The file of a backup by its name; anything but a plain NAME.exp is refused."""
    if not _NAME.match(name or ""):
        raise NotFoundError(f"no backup named {name!r}")
    path = backups_dir() / name
    if not path.is_file():
        raise NotFoundError(f"no backup named {name!r}")
    return path


def list_backups() -> list[dict[str, Any]]:
    folder = backups_dir()
    if not folder.is_dir():
        return []
    rows = []
    for path in folder.iterdir():
        if _NAME.match(path.name) and path.is_file():
            info = path.stat()
            rows.append({"name": path.name, "bytes": info.st_size,
                         "modified": dt.datetime.fromtimestamp(info.st_mtime, dt.UTC),
                         "encrypted": backup_crypto.is_encrypted(path)})
    rows.sort(key=lambda r: r["modified"], reverse=True)
    return rows


def _free_name(stem: str) -> str:
    """STEM.exp, or STEM-2.exp, STEM-3.exp … when taken."""
    name, n = f"{stem}.exp", 1
    while (backups_dir() / name).exists() or (backups_dir() / f"{name}.part").exists():
        n += 1
        name = f"{stem}-{n}.exp"
    return name


def _new_name(prefix: str, now: dt.datetime | None = None) -> str:
    return _free_name(f"{prefix}-{(now or dt.datetime.now(dt.UTC)):%Y%m%d-%H%M%S}")


def create(database_url: str, with_content: bool = False) -> backup.BackupSummary:
    """A new backup in the backups folder (owner-only, like `patchflow backup`)."""
    out = backups_dir() / _new_name("patchflow")
    return backup.create_backup(get_engine(database_url), out,
                                config.content_dir() if with_content else None)


def save_upload(data: bytes, filename: str) -> dict[str, Any]:
    """Keep an uploaded archive once it passes the checks a restore makes first (a plain one
    fully; an encrypted one can only be checked with its passphrase, at restore)."""
    if not data:
        raise UserError("choose a backup file to upload")
    folder = backups_dir()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename or "upload").stem)[:60].strip(".-")
    created = None
    try:  # a full disk or a read-only folder is the administrator's to fix: say so in one line
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / _free_name(f"uploaded-{stem or 'backup'}")
        partial = path.with_name(path.name + ".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        created = partial
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        if created is not None:
            created.unlink(missing_ok=True)
        raise UserError(f"cannot store the upload in {folder}: {exc.strerror or exc}") from None
    try:
        manifest = None
        if not backup_crypto.is_encrypted(partial):
            manifest = backup.read_manifest(partial, label=Path(filename or "the upload"))
            backup.content_targets(manifest, config.content_dir(), filename or "the upload")
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(path)
    return {"name": path.name, "manifest": manifest}


def describe(name: str) -> dict[str, Any]:
    """What a restore of this backup would bring back: its manifest (None while encrypted)."""
    path = backup_path(name)
    if backup_crypto.is_encrypted(path):
        return {"name": name, "encrypted": True, "manifest": None}
    manifest = backup.read_manifest(path)
    tables = manifest.get("tables")
    rows = (sum(v for v in tables.values() if isinstance(v, int))
            if isinstance(tables, dict) else None)
    return {"name": name, "encrypted": False, "manifest": {
        "created_at": str(manifest.get("created_at") or ""),
        "schema_revision": str(manifest.get("schema_revision") or ""),
        "patchflow": str(manifest.get("patchflow") or ""), "rows": rows}}


def restore(database_url: str, name: str, passphrase: str | None = None) -> dict[str, int]:
    """Replace the database's data with the backup's (the CLI's `restore --force`): checked
    whole first, written in one transaction."""
    return backup.restore_archive(database_url, backup_path(name), passphrase or None,
                                  force=True)
