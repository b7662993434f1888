"""Backup and restore of the whole patch database as a portable archive.

The archive (`.exp`, a zip) holds `manifest.json` (format, schema revision, per-table row counts,
the SHA-256 of every member), one JSON-lines file per table, and optionally the content store
under `content/`. Rows are written as JSON with typed values, so a backup taken on SQLite
restores into MariaDB and back. Restore checks the whole manifest before touching the target,
and writes everything in one transaction: a damaged archive leaves the target untouched.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, text
from sqlalchemy.sql.schema import Table
from sqlalchemy.types import Date, DateTime, LargeBinary

from models import Base
from models.migrate import current_revision, head_revision
from patchflow import __version__
from patchflow.errors import UserError

FORMAT = "patchflow-backup/1"
CHUNK = 5000


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


def create_backup(engine: Engine, out: Path, content_dir: Path | None = None) -> BackupSummary:
    revision = current_revision(str(engine.url.render_as_string(hide_password=False)))
    if revision is None:
        raise UserError("the patch database is not initialised: nothing to back up")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".part")
    digests: dict[str, str] = {}
    counts: dict[str, int] = {}
    files = 0
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
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
        if content_dir is not None and (content_dir / "sha256").is_dir():
            for path in sorted((content_dir / "sha256").rglob("*")):
                if path.is_file():
                    name = f"content/{path.relative_to(content_dir).as_posix()}"
                    archive.write(path, name)
                    digests[name] = _file_sha(path)
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
    partial.replace(out)
    return BackupSummary(out, counts, files)


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(archive_path: Path) -> dict[str, Any]:
    """Open and fully verify an archive; any damage is a one-line UserError."""
    if not archive_path.is_file():
        raise UserError(f"backup file {archive_path} does not exist")
    try:
        with zipfile.ZipFile(archive_path) as archive:
            try:
                manifest = json.loads(archive.read("manifest.json"))
            except KeyError:
                raise UserError(f"{archive_path}: not a patchflow backup (no manifest)") from None
            if manifest.get("format") != FORMAT:
                raise UserError(f"{archive_path}: unsupported backup format "
                                f"{manifest.get('format')!r}")
            names = set(archive.namelist()) - {"manifest.json"}
            expected = set(manifest.get("sha256", {}))
            if names != expected:
                extra = sorted(names ^ expected)[0]
                raise UserError(f"{archive_path}: damaged: member {extra} does not match the "
                                "manifest")
            for name, want in manifest["sha256"].items():
                digest = hashlib.sha256()
                with archive.open(name) as member:
                    for block in iter(lambda m=member: m.read(1 << 20), b""):
                        digest.update(block)
                if digest.hexdigest() != want:
                    raise UserError(f"{archive_path}: damaged: {name} fails its SHA-256 check")
    except (zipfile.BadZipFile, zlib.error, EOFError, json.JSONDecodeError) as exc:
        raise UserError(f"{archive_path}: damaged archive: {exc}") from None
    return manifest


def database_is_empty(engine: Engine) -> bool:
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            if conn.execute(select(func.count()).select_from(table)).scalar():
                return False
    return True


def restore_backup(engine: Engine, archive_path: Path, force: bool = False,
                   content_dir: Path | None = None) -> dict[str, int]:
    manifest = read_manifest(archive_path)
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
        if engine.dialect.name == "mysql":
            conn.execute(text("SET FOREIGN_KEY_CHECKS=1"))
    if content_dir is not None:
        with zipfile.ZipFile(archive_path) as archive:
            for name in manifest["sha256"]:
                if name.startswith("content/"):
                    target = content_dir / name[len("content/"):]
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.open(name) as src, target.open("wb") as dst:
                        dst.write(src.read())
    return counts
