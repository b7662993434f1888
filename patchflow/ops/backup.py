"""Backup and restore of the whole patch database as a portable archive.

The archive (`.exp`, a zip) holds `manifest.json` (format, schema revision, per-table row counts,
the SHA-256 of every member), one JSON-lines file per table, and optionally the content store
under `content/`. Rows are written as JSON with typed values, so a backup taken on SQLite
restores into MariaDB and back. Restore checks the whole manifest before touching the target,
and writes everything in one transaction: a damaged archive leaves the target untouched.

An archive is untrusted input (it may come from another machine, a share, an attacker): before
anything is written, every member name must be one this module writes (`manifest.json`,
`tables/NAME.jsonl`, `content/...` with no `..`, no absolute or drive path, no backslash), appear
once, be a plain file (not a link), and every content file must land inside the content folder
once resolved. With `--encrypt` the zip is sealed by `backup_crypto`; restore decrypts it into
a private temporary file first. The archive itself is created owner-only (0600).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.sql.schema import Table
from sqlalchemy.types import Date, DateTime, LargeBinary

from models import Base
from models.db import get_engine
from models.migrate import current_revision, head_revision, upgrade
from patchflow import __version__, config
from patchflow.catalog.content import file_sha256
from patchflow.errors import UserError
from patchflow.fleet.agent_cache import bump_generation
from patchflow.ops import backup_crypto, faults

FORMAT = "patchflow-backup/1"
CHUNK = 5000
PASSPHRASE_ENV = "PATCHFLOW_BACKUP_PASSPHRASE"
_TABLE_MEMBER = re.compile(r"^tables/[A-Za-z0-9_]+\.jsonl$")


@dataclass
class BackupSummary:
    path: Path
    tables: dict[str, int]
    content_files: int


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$d": value.isoformat()}
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode()}
    return value


def _decode(value: Any, column_type: Any) -> Any:
    if isinstance(value, dict):
        if "$dt" in value:
            return dt.datetime.fromisoformat(value["$dt"])
        if "$d" in value:
            return dt.date.fromisoformat(value["$d"])
        if "$b" in value:
            return base64.b64decode(value["$b"])
    if value is not None and isinstance(column_type, DateTime) and isinstance(value, str):
        return dt.datetime.fromisoformat(value)
    if value is not None and isinstance(column_type, Date) and isinstance(value, str):
        return dt.date.fromisoformat(value)
    if value is not None and isinstance(column_type, LargeBinary) and isinstance(value, str):
        return base64.b64decode(value)
    return value


def _table_lines(engine: Engine, table: Table) -> Iterator[bytes]:
    pk = list(table.primary_key.columns)
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True).execute(
            select(table).order_by(*pk))
        for row in result.mappings():
            yield (json.dumps({k: _encode(v) for k, v in row.items()},
                              ensure_ascii=False) + "\n").encode()


def create_backup(engine: Engine, out: Path, content_dir: Path | None = None,
                  passphrase: str | None = None) -> BackupSummary:
    """Write the archive to `out` (owner-only), sealed with `passphrase` when one is given."""
    revision = current_revision(str(engine.url.render_as_string(hide_password=False)))
    if revision is None:
        raise UserError("the patch database is not initialised: nothing to back up")
    partial = out.with_name(out.name + ".part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)  # a stale part of an interrupted run may be readable
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            if passphrase is None:
                counts, files = _write_zip(engine, handle, content_dir, revision)
            else:
                sealed = backup_crypto.EncryptingWriter(handle, passphrase)
                counts, files = _write_zip(engine, sealed, content_dir, revision)
                sealed.close()
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupSummary(out, counts, files)


def _write_zip(engine: Engine, handle: Any, content_dir: Path | None,
               revision: str) -> tuple[dict[str, int], int]:
    digests: dict[str, str] = {}
    counts: dict[str, int] = {}
    files = 0
    with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for table in Base.metadata.sorted_tables:
            name = f"tables/{table.name}.jsonl"
            digest = hashlib.sha256()
            rows = 0
            with archive.open(name, "w") as member:
                for line in _table_lines(engine, table):
                    member.write(line)
                    digest.update(line)
                    rows += 1
            digests[name] = digest.hexdigest()
            counts[table.name] = rows
            faults.point("backup.mid_write")  # test hook: some tables in the .part file
        if content_dir is not None and (content_dir / "sha256").is_dir():
            for path in sorted((content_dir / "sha256").rglob("*")):
                if path.is_file() and not path.is_symlink():
                    name = f"content/{path.relative_to(content_dir).as_posix()}"
                    archive.write(path, name)
                    digests[name] = file_sha256(path)
                    files += 1
        manifest = {
            "format": FORMAT,
            "patchflow": __version__,
            "schema_revision": revision,
            "created_at": dt.datetime.now(dt.UTC).isoformat(),
            "source_dialect": engine.dialect.name,
            "tables": counts,
            "sha256": digests,
        }
        archive.writestr("manifest.json", json.dumps(manifest, indent=1))
    return counts, files


def passphrase_from(passphrase_file: Path | None) -> str | None:
    """The backup passphrase from a file (first line) or PATCHFLOW_BACKUP_PASSPHRASE; never
    from a command-line argument, which every user on the machine can read in `ps`."""
    if passphrase_file is not None:
        try:
            text = passphrase_file.expanduser().read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or exc
            raise UserError(f"cannot read passphrase file {passphrase_file}: {reason}") from None
        lines = text.splitlines()
        if not lines or not lines[0]:
            raise UserError(f"passphrase file {passphrase_file} is empty")
        return lines[0]
    return os.environ.get(PASSPHRASE_ENV) or None


@contextmanager
def plain_archive(archive_path: Path, passphrase: str | None,
                  workdir: Path | None = None) -> Iterator[Path]:
    """The archive as a plain zip: the file itself, or (encrypted) a decrypted copy in a
    private temporary folder under `workdir`, removed on exit whatever happens."""
    if not archive_path.is_file():
        raise UserError(f"backup file {archive_path} does not exist")
    if not backup_crypto.is_encrypted(archive_path):
        yield archive_path
        return
    if passphrase is None:
        raise UserError(f"{archive_path} is encrypted: set {PASSPHRASE_ENV} (or give "
                        "`patchflow restore` --passphrase-file FILE)")
    folder = Path(tempfile.mkdtemp(prefix=".patchflow-restore-", dir=workdir))  # mode 0700
    try:
        plain = folder / "backup.zip"
        fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with archive_path.open("rb") as src, os.fdopen(fd, "wb") as dst:
                backup_crypto.decrypt(src, dst, passphrase, str(archive_path))
        except OSError as exc:
            raise UserError(f"cannot decrypt {archive_path}: {exc.strerror or exc}") from None
        yield plain
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_member_names(infos: list[zipfile.ZipInfo], label: str) -> None:
    """Every member is a plain file with a name this module writes, once: zip-slip, absolute
    paths, links and shadowing duplicates are refused before anything is read or written."""
    folded = Counter(info.filename.casefold() for info in infos)  # exact repeats included
    for info in infos:
        name = info.filename
        if folded[name.casefold()] > 1:
            raise UserError(f"{label}: refused: member {name!r} appears more than once")
        if "\\" in name or "\0" in name or name.startswith("/") \
                or re.match(r"^[A-Za-z]:", name):
            raise UserError(f"{label}: refused: member {name!r} is an absolute or Windows path")
        parts = name.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise UserError(f"{label}: refused: member {name!r} leaves its folder")
        if not (name == "manifest.json" or _TABLE_MEMBER.match(name)
                or (parts[0] == "content" and len(parts) > 1)):
            raise UserError(f"{label}: refused: unexpected member {name!r}")
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind not in (0, stat.S_IFREG):
            what = "a symbolic link" if kind == stat.S_IFLNK else "not a plain file"
            raise UserError(f"{label}: refused: member {name!r} is {what}")


def content_targets(manifest: dict[str, Any], content_dir: Path,
                    label: str) -> dict[str, Path]:
    """Where each content member goes; refused unless it resolves inside `content_dir`
    (a link already in the store cannot redirect a write either)."""
    root = content_dir.resolve()
    targets: dict[str, Path] = {}
    for name in manifest["sha256"]:
        if not name.startswith("content/"):
            continue
        target = (root / name[len("content/"):]).resolve()
        if not target.is_relative_to(root) or target == root:
            raise UserError(f"{label}: refused: member {name!r} resolves outside the content "
                            f"folder {root}")
        targets[name] = target
    return targets


def read_manifest(archive_path: Path, label: Path | None = None) -> dict[str, Any]:
    """Open and fully verify a plain archive; any damage is a one-line UserError. `label` is
    the name the user gave (when `archive_path` is a decrypted temporary copy)."""
    where = str(label or archive_path)
    if not archive_path.is_file():
        raise UserError(f"backup file {where} does not exist")
    if backup_crypto.is_encrypted(archive_path):
        raise UserError(f"{where} is encrypted: its passphrase is needed")
    try:
        with zipfile.ZipFile(archive_path) as archive:
            check_member_names(archive.infolist(), where)
            try:
                manifest = json.loads(archive.read("manifest.json"))
            except KeyError:
                raise UserError(f"{where}: not a patchflow backup (no manifest)") from None
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                found = manifest.get("format") if isinstance(manifest, dict) else None
                raise UserError(f"{where}: unsupported backup format {found!r}")
            names = set(archive.namelist()) - {"manifest.json"}
            digests = manifest.get("sha256")
            if not isinstance(digests, dict):
                raise UserError(f"{where}: damaged: the manifest has no SHA-256 list")
            expected = set(digests)
            if names != expected:
                extra = sorted(names ^ expected)[0]
                raise UserError(f"{where}: damaged: member {extra} does not match the "
                                "manifest")
            for name, want in digests.items():
                with archive.open(name) as member:
                    actual = hashlib.file_digest(member, "sha256").hexdigest()
                if actual != want:
                    raise UserError(f"{where}: damaged: {name} fails its SHA-256 check")
    except (zipfile.BadZipFile, zlib.error, EOFError, json.JSONDecodeError) as exc:
        raise UserError(f"{where}: damaged archive: {exc}") from None
    except OSError as exc:
        raise UserError(f"cannot read {where}: {exc.strerror or exc}") from None
    return manifest


def database_is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if conn.execute(select(func.count()).select_from(table)).scalar():
                return False
    return True


def restore_archive(database_url: str, archive: Path, passphrase: str | None,
                    force: bool = False) -> dict[str, int]:
    """`patchflow restore` and the console's restore, into the home's content folder. The
    archive (decrypted in a private folder in the home) is checked whole before the target is
    touched, even before an empty database is given its schema, and hashed only that once."""
    home = config.home()
    content_dir = config.content_dir()
    with plain_archive(archive, passphrase, home if home.is_dir() else None) as plain:
        manifest = read_manifest(plain, label=archive)
        targets = content_targets(manifest, content_dir, str(archive))
        if current_revision(database_url) is None:
            upgrade(database_url)
        return _replace_data(get_engine(database_url), plain, manifest, targets, force)


def restore_backup(engine: Engine, archive_path: Path, force: bool = False,
                   content_dir: Path | None = None, label: Path | None = None) -> dict[str, int]:
    """Replace the target's data with a plain archive's (see `plain_archive` for an encrypted
    one). Everything is checked first; the rows and the content files are written in one
    transaction, so a failure while writing content leaves the database as it was."""
    where = str(label or archive_path)
    manifest = read_manifest(archive_path, label)
    targets = content_targets(manifest, content_dir, where) if content_dir is not None else {}
    return _replace_data(engine, archive_path, manifest, targets, force)


def _replace_data(engine: Engine, archive_path: Path, manifest: dict[str, Any],
                  targets: dict[str, Path], force: bool) -> dict[str, int]:
    """The write half of a restore, for an archive `read_manifest` passed."""
    if manifest["schema_revision"] != head_revision():
        raise UserError(
            f"backup schema {manifest['schema_revision']} differs from this patchflow's "
            f"{head_revision()}: restore it with the matching version")
    if not database_is_empty(engine) and not force:
        raise UserError("the target database is not empty: restore refuses to overwrite it "
                        "without --force")
    tables = {t.name: t for t in Base.metadata.sorted_tables}
    counts: dict[str, int] = {}
    with zipfile.ZipFile(archive_path) as archive, engine.begin() as conn:
        if engine.dialect.name == "mysql":
            conn.execute(text("SET FOREIGN_KEY_CHECKS=0"))
        else:
            conn.execute(text("PRAGMA defer_foreign_keys=ON"))
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
        for name in tables:
            member = f"tables/{name}.jsonl"
            if member not in manifest["sha256"]:
                continue
            table = tables[name]
            types = {c.name: c.type for c in table.columns}
            batch: list[dict[str, Any]] = []
            counts[name] = 0
            with archive.open(member) as handle:
                for line in handle:
                    row = json.loads(line)
                    batch.append({k: _decode(v, types.get(k)) for k, v in row.items()
                                  if k in types})
                    if len(batch) >= CHUNK:
                        conn.execute(insert(table), batch)
                        counts[name] += len(batch)
                        batch = []
            if batch:
                conn.execute(insert(table), batch)
                counts[name] += len(batch)
            faults.point("restore.mid_tables")  # test hook: some tables in, not committed
        # Every server's credential cache re-reads: the restored agents are not the cached ones.
        bump_generation(conn)
        if engine.dialect.name == "mysql":
            conn.execute(text("SET FOREIGN_KEY_CHECKS=1"))
        for name, target in targets.items():
            _extract(archive, name, target)
    return counts


def _extract(archive: zipfile.ZipFile, name: str, target: Path) -> None:
    """Write one member through a part file, so a file in the store is always complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".restore-part")
    part.unlink(missing_ok=True)
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with archive.open(name) as src, os.fdopen(fd, "wb") as dst:
            faults.point("restore.mid_content")  # test hook: a content file begun
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
