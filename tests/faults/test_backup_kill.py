"""SIGKILL during `patchflow backup` and during `patchflow restore`, then the rerun.

Backup: the archive is written as FILE.part and renamed when complete, so a kill leaves the
previous archive intact (or none), never a partial file under the final name; a leftover
.part is refused by restore. Restore: the rows (and the content files) are written in one
transaction, so a kill leaves the target exactly as it was, and the rerun restores it whole."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
from tests.faults.harness import Commands, counts, snapshot
from tests.flows.test_scan_flow import FLEET

PAYLOAD = b"installer bytes kept in the content store"
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _populate(cli, home: Path, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    """A home with a synced catalog, scanned endpoints and one content file; its content dir."""
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h", "--msrc-source", str(MSRC_DIR),
               "--winget-source", str(WINGET_DIR), "--winget-packages",
               ",".join(PACKAGES)).code == 0
    assert cli("sync", "local").code == 0
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps(FLEET))
    assert cli("endpoints", "import", str(fleet)).code == 0
    content = home / "content"
    (content / "sha256" / SHA[:2]).mkdir(parents=True)
    (content / "sha256" / SHA[:2] / SHA).write_bytes(PAYLOAD)
    return content


def _content_sane(content: Path) -> list[str]:
    """Files stored under a SHA-256 name whose bytes do not have that hash (must be none)."""
    return [str(p) for p in (content / "sha256").rglob("*") if p.is_file()
            and re.fullmatch(r"[0-9a-f]{64}", p.name)
            and hashlib.sha256(p.read_bytes()).hexdigest() != p.name]


def test_backup_killed_mid_write(cli, commands: Commands, home: Path, db_url: str,
                                 tmp_path: Path) -> None:
    from patchflow.ops.backup import read_manifest

    _populate(cli, home, tmp_path)
    archive = tmp_path / "nightly.exp"
    assert cli("backup", "--out", str(archive), "--with-content").code == 0
    previous = archive.read_bytes()

    # Killed while overwriting last night's archive: that archive is untouched and still valid.
    commands.killed("backup", "--out", str(archive), "--with-content",
                    fault="backup.mid_write@3")
    assert archive.read_bytes() == previous
    read_manifest(archive)
    part = archive.with_name(archive.name + ".part")
    if part.exists():  # the interrupted write is never mistaken for a backup
        refused = cli("restore", str(part), "--force")
        assert refused.code == 2 and "Traceback" not in refused.err, refused.err

    # Killed writing a new archive: no file under the final name.
    fresh = tmp_path / "fresh.exp"
    commands.killed("backup", "--out", str(fresh), fault="backup.mid_write@5")
    assert not fresh.exists()

    # The rerun writes a complete archive and leaves no part file behind.
    assert cli("backup", "--out", str(fresh), "--with-content").code == 0
    assert not fresh.with_name(fresh.name + ".part").exists()
    manifest = read_manifest(fresh)
    assert manifest["tables"] == counts(db_url)
    assert f"content/sha256/{SHA[:2]}/{SHA}" in manifest["sha256"]


def test_restore_killed_mid_tables_and_mid_content(cli, commands: Commands, home: Path,
                                                   db_url: str, tmp_path: Path) -> None:
    content = _populate(cli, home, tmp_path)
    archive = tmp_path / "b.exp"
    assert cli("backup", "--out", str(archive), "--with-content").code == 0
    backed_up = snapshot(db_url)
    # The target then changes: a restore must bring back the archive's state, all of it.
    assert cli("server", "add", "extra", "--host", "x").code == 0
    assert cli("endpoints", "revoke", "WS-01").code == 0
    (content / "sha256" / SHA[:2] / SHA).unlink()
    changed = snapshot(db_url)
    assert changed != backed_up

    commands.killed("restore", str(archive), "--force", fault="restore.mid_tables@4")
    assert snapshot(db_url) == changed  # untouched: the half-inserted rows rolled back
    commands.killed("restore", str(archive), "--force", fault="restore.mid_content")
    assert snapshot(db_url) == changed
    assert _content_sane(content) == []  # no half-written file under a SHA-256 name

    assert cli("restore", str(archive), "--force").code == 0
    assert snapshot(db_url) == backed_up
    assert (content / "sha256" / SHA[:2] / SHA).read_bytes() == PAYLOAD
    assert _content_sane(content) == []


@pytest.fixture(autouse=True)
def _fresh_engines() -> None:
    """In-process commands keep pooled connections; a killed process's SQLite journal and
    MariaDB locks must not be hidden by them."""
    from models.db import dispose_all

    dispose_all()
