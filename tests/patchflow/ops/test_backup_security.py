"""Backups as an attack surface.

- A crafted archive (a valid manifest and valid hashes, so only the name checks can stop it)
  must never write outside the content folder: `..`, absolute names, links, duplicates and a
  link already in the store are refused, by `restore` and by `init --import`, with one line,
  nothing written and the database untouched, on SQLite and MariaDB.
- `backup --encrypt`: a passphrase from a file or the environment, scrypt + AES-GCM; restore
  with a wrong or missing passphrase, or of a tampered file, leaves the target as it was.
- Everything patchflow creates in its home is owner-only under the usual umask 022, and
  `init` tightens a home an older version left readable.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchflow.errors import UserError
from patchflow.ops import backup_crypto
from tests.conftest import ROOT, _prepare
from tests.faults.harness import snapshot

PASSPHRASE = "correct horse battery staple"


def _db_url() -> str:
    return os.environ["PATCHFLOW_DATABASE_URL"]


def _servers(cli) -> set[str]:  # type: ignore[no-untyped-def]
    return {s["name"] for s in json.loads(cli("server", "list", "--json").out)}


def _craft(src: Path, dst: Path, extra: list[tuple[zipfile.ZipInfo | str, bytes]]) -> None:
    """Copy a real backup, rename the server `local` to `evil`, add `extra` members, and
    rewrite the manifest so every hash matches: only the name checks stand in the way."""
    with zipfile.ZipFile(src) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        members = [(i.filename, archive.read(i.filename)) for i in archive.infolist()
                   if i.filename != "manifest.json"]
    members = [(name, data.replace(b'"local"', b'"evil"')) for name, data in members]
    with warnings.catch_warnings(), zipfile.ZipFile(dst, "w") as out:
        warnings.simplefilter("ignore")  # "Duplicate name": that is the point of one case
        for name, data in [*members, *extra]:
            out.writestr(name, data)
            key = name.filename if isinstance(name, zipfile.ZipInfo) else name
            manifest["sha256"][key] = hashlib.sha256(data).hexdigest()
        out.writestr("manifest.json", json.dumps(manifest))


def _symlink_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _evil_archives(good: Path, tmp_path: Path) -> Iterator[tuple[str, Path, str]]:
    """(what, archive, expected words in the error) for each way out of the content folder."""
    outside = tmp_path / "outside"
    with zipfile.ZipFile(good) as archive:  # a valid row, so only the name check refuses it
        shadow = archive.read("tables/patch_servers.jsonl").replace(b'"local"', b'"shadow"')
    cases: list[tuple[str, list[tuple[zipfile.ZipInfo | str, bytes]], str]] = [
        ("dot-dot", [("content/../../outside/escaped.txt", b"pwned")], "leaves its folder"),
        ("deep dot-dot", [("content/sha256/../../../outside/escaped.txt", b"pwned")],
         "leaves its folder"),
        ("absolute in content", [("content/" + str(outside / "escaped.txt"), b"pwned")],
         "leaves its folder"),
        ("absolute", [(str(outside / "escaped.txt"), b"pwned")], "absolute"),
        ("backslash", [("content\\..\\..\\outside\\escaped.txt", b"pwned")], "absolute"),
        ("symlink", [(_symlink_member("content/sha256/ab/link"), str(outside).encode())],
         "symbolic link"),
        ("duplicate", [("tables/patch_servers.jsonl", shadow)], "more than once"),
    ]
    for what, extra, words in cases:
        path = tmp_path / f"evil-{what.replace(' ', '-')}.exp"
        _craft(good, path, extra)
        yield what, path, words


def _assert_nothing_escaped(tmp_path: Path, home: Path) -> None:
    assert not (tmp_path / "outside" / "escaped.txt").exists()
    assert list((tmp_path / "outside").iterdir()) == []
    assert not (home / "content" / "sha256" / "ab" / "link").exists()
    assert not list(home.glob(".patchflow-restore-*"))


def test_crafted_archives_are_refused_by_restore(cli, home: Path, tmp_path: Path) -> None:
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h").code == 0
    good = tmp_path / "good.exp"
    assert cli("backup", "--out", str(good)).code == 0
    (tmp_path / "outside").mkdir()
    before = snapshot(_db_url())
    for what, evil, words in _evil_archives(good, tmp_path):
        r = cli("restore", str(evil), "--force")
        assert r.code == 2, (what, r.out, r.err)
        assert words in r.err and "refused" in r.err, (what, r.err)
        assert r.err.count("\n") == 1, (what, r.err)  # one line, no traceback
        _assert_nothing_escaped(tmp_path, home)
        assert snapshot(_db_url()) == before, what  # not even the rows were replaced

    # A link already in the content store cannot redirect a restored file either.
    redirected = tmp_path / "redirected"
    redirected.mkdir()
    (home / "content" / "sha256").mkdir(parents=True)
    (home / "content" / "sha256" / "ab").symlink_to(redirected)
    evil = tmp_path / "evil-store-link.exp"
    _craft(good, evil, [("content/sha256/ab/" + "ab" * 32, b"pwned")])
    r = cli("restore", str(evil), "--force")
    assert r.code == 2 and "outside the content folder" in r.err, r.err
    assert list(redirected.iterdir()) == []
    assert snapshot(_db_url()) == before
    # The genuine archive still restores (the checks refuse only what they should).
    assert cli("restore", str(good), "--force").code == 0
    assert _servers(cli) == {"local"}


def test_crafted_archives_are_refused_by_init_import(cli, home: Path, db_url: str,
                                                     tmp_path: Path) -> None:
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h").code == 0
    good = tmp_path / "good.exp"
    assert cli("backup", "--out", str(good)).code == 0
    (tmp_path / "outside").mkdir()
    evils = list(_evil_archives(good, tmp_path))
    _prepare(db_url)  # an empty database, as `init --import` requires
    before = snapshot(db_url)
    for what, evil, words in evils:
        r = cli("init", "--import", str(evil))
        assert r.code == 2, (what, r.out, r.err)
        assert words in r.err, (what, r.err)
        _assert_nothing_escaped(tmp_path, home)
        assert snapshot(db_url) == before, what
    r = cli("init", "--import", str(good))
    assert r.code == 0, r.err
    assert _servers(cli) == {"local"}


# --- encrypted backups ------------------------------------------------------------------------

def test_encrypted_backup_round_trip(cli, home: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h").code == 0
    archive = tmp_path / "sealed.exp"
    r = cli("backup", "--out", str(archive), "--encrypt")
    assert r.code == 2 and "needs a passphrase" in r.err  # never a plain backup by surprise
    assert not archive.exists()
    secret = tmp_path / "pass.txt"
    secret.write_text("short\n")
    r = cli("backup", "--out", str(archive), "--encrypt", "--passphrase-file", str(secret))
    assert r.code == 2 and "at least 12" in r.err
    assert not archive.exists() and not list(tmp_path.glob("*.part"))
    assert cli("backup", "--out", str(archive), "--passphrase-file", str(secret)).code == 2
    r = cli("backup", "--out", "/proc/patchflow/b.exp")  # unwritable: one line, no traceback
    assert r.code == 2 and "cannot write" in r.err and r.err.count("\n") == 1, r.err

    monkeypatch.setenv("PATCHFLOW_BACKUP_PASSPHRASE", PASSPHRASE)
    r = cli("backup", "--out", str(archive), "--encrypt")
    assert r.code == 0 and "encrypted" in r.out, r.err
    data = archive.read_bytes()
    assert data.startswith(backup_crypto.MAGIC)
    assert b"PK\x03\x04" not in data and b"manifest" not in data and b"patch_servers" not in data
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    monkeypatch.delenv("PATCHFLOW_BACKUP_PASSPHRASE")

    assert cli("server", "add", "other", "--host", "h2").code == 0
    before = snapshot(_db_url())
    r = cli("restore", str(archive), "--force")  # no passphrase anywhere, not a terminal
    assert r.code == 2 and "is encrypted" in r.err, r.err
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase at all\n")
    r = cli("restore", str(archive), "--force", "--passphrase-file", str(wrong))
    assert r.code == 2 and "wrong passphrase" in r.err and r.err.count("\n") == 1, r.err
    tampered = tmp_path / "tampered.exp"
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(flipped))
    right = tmp_path / "right.txt"
    right.write_text(PASSPHRASE + "\n")
    r = cli("restore", str(tampered), "--force", "--passphrase-file", str(right))
    assert r.code == 2 and "damaged encrypted backup" in r.err, r.err
    cut = tmp_path / "cut.exp"
    cut.write_bytes(data[:-10])
    r = cli("restore", str(cut), "--force", "--passphrase-file", str(right))
    assert r.code == 2 and "damaged encrypted backup" in r.err, r.err
    assert snapshot(_db_url()) == before
    assert not list(home.glob(".patchflow-restore-*"))  # no plain text left behind

    r = cli("restore", str(archive), "--force", "--passphrase-file", str(right))
    assert r.code == 0, r.err
    assert _servers(cli) == {"local"}
    assert not list(home.glob(".patchflow-restore-*"))


def test_encrypted_backup_imported_by_init(cli, home: Path, db_url: str, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h").code == 0
    archive = tmp_path / "sealed.exp"
    monkeypatch.setenv("PATCHFLOW_BACKUP_PASSPHRASE", PASSPHRASE)
    assert cli("backup", "--out", str(archive), "--encrypt").code == 0
    _prepare(db_url)
    monkeypatch.setenv("PATCHFLOW_BACKUP_PASSPHRASE", "a different passphrase")
    r = cli("init", "--import", str(archive))
    assert r.code == 2 and "wrong passphrase" in r.err, r.err
    assert snapshot(db_url)["patch_servers"] == []
    monkeypatch.setenv("PATCHFLOW_BACKUP_PASSPHRASE", PASSPHRASE)
    r = cli("init", "--import", str(archive))
    assert r.code == 0, r.err
    assert _servers(cli) == {"local"}


def test_stream_format_detects_dropped_and_reordered_chunks() -> None:
    """Several 1 MiB chunks: a dropped or swapped chunk fails authentication."""
    plain = os.urandom(backup_crypto.CHUNK * 2 + 12345)
    sealed = io.BytesIO()
    writer = backup_crypto.EncryptingWriter(sealed, PASSPHRASE)
    for start in range(0, len(plain), 70_000):
        writer.write(plain[start:start + 70_000])
    writer.close()
    data = sealed.getvalue()
    out = io.BytesIO()
    backup_crypto.decrypt(io.BytesIO(data), out, PASSPHRASE, "x")
    assert out.getvalue() == plain

    start = len(backup_crypto.MAGIC)
    header = start + 4 + int.from_bytes(data[start:start + 4], "big")
    size = backup_crypto.CHUNK + backup_crypto.TAG
    first, second = data[header:header + size], data[header + size:header + 2 * size]
    rest = data[header + 2 * size:]
    for broken in (data[:header] + first + rest,              # a middle chunk dropped
                   data[:header] + second + first + rest,     # two chunks swapped
                   data[:header] + first + second):           # the last chunk cut off
        with pytest.raises(UserError, match="damaged encrypted backup"):
            backup_crypto.decrypt(io.BytesIO(broken), io.BytesIO(), PASSPHRASE, "x")
    with pytest.raises(backup_crypto.WrongPassphrase):
        backup_crypto.decrypt(io.BytesIO(data), io.BytesIO(), PASSPHRASE + "!", "x")


# --- file permissions -------------------------------------------------------------------------

@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _readable_by_others(root: Path) -> list[str]:
    entries = [root, *root.rglob("*")]
    return sorted(f"{p.relative_to(root.parent)} {stat.filemode(p.lstat().st_mode)}"
                  for p in entries if not p.is_symlink() and p.lstat().st_mode & 0o077)


@pytest.mark.usefixtures("prefect", "umask_022")
def test_files_created_under_umask_022_are_owner_only(cli, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "newhome"  # created by patchflow itself
    monkeypatch.setenv("PATCHFLOW_HOME", str(home))
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", f"sqlite:///{home / 'patchflow.db'}")
    r = cli("init")
    assert r.code == 0, r.err
    assert os.umask(0o022) == 0o022  # the CLI gave the caller its umask back
    assert cli("server", "add", "local", "--host", "h").code == 0
    backup_file = home / "backups" / "b.exp"
    assert cli("backup", "--out", str(backup_file)).code == 0
    r = cli("report", "--kind", "patches", "--format", "html,csv")
    assert r.code == 0, r.err
    reports = [p for p in (home / "reports").rglob("*") if p.is_file()]
    assert any(p.suffix == ".csv" for p in reports) and any(p.suffix == ".html" for p in reports)
    for path in (home / "patchflow.db", home / "secret.key", backup_file, *reports):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert _readable_by_others(home) == []
    # A backup written outside the home is owner-only as well (it holds the same secrets).
    outside = tmp_path / "elsewhere.exp"
    assert cli("backup", "--out", str(outside)).code == 0
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600


def test_init_makes_an_existing_home_private(cli, sqlite_home: Path) -> None:
    (sqlite_home / "reports").mkdir()
    (sqlite_home / "reports" / "old.html").write_text("report")
    for path, mode in ((sqlite_home, 0o755), (sqlite_home / "patchflow.db", 0o644),
                       (sqlite_home / "reports", 0o775), (sqlite_home / "reports" / "old.html",
                                                          0o664)):
        path.chmod(mode)
    r = cli("init")
    assert r.code == 0, r.err
    assert "owner-only" in r.out
    assert _readable_by_others(sqlite_home) == []
    assert stat.S_IMODE((sqlite_home / "reports" / "old.html").stat().st_mode) == 0o600
    assert stat.S_IMODE(sqlite_home.stat().st_mode) == 0o700
    assert "owner-only" not in cli("init").out  # nothing left to change the second time


def test_real_entry_point_sets_the_umask(tmp_path: Path) -> None:
    """`python -m cli.main` as a service would start it, under umask 022."""
    home = tmp_path / "svc"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHFLOW_")}
    env.update(PATCHFLOW_HOME=str(home), PREFECT_HOME=str(home / "prefect"))
    result = subprocess.run([sys.executable, "-m", "cli.main", "init"], cwd=ROOT, env=env,
                            umask=0o022, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (home / "patchflow.db").is_file() and (home / "prefect").is_dir()
    assert _readable_by_others(home) == []
