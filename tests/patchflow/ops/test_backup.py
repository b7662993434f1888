"""Backup and restore round trips SQLite -> MariaDB -> SQLite with every table compared."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
from tests.faults.harness import snapshot
from tests.flows.test_scan_flow import FLEET
from tests.support.mariadb import fresh_database

pytestmark = pytest.mark.usefixtures("prefect")


@pytest.fixture
def mariadb_url() -> Iterator[str]:
    with fresh_database("patchflow_restore") as url:
        yield url


def test_round_trip_sqlite_mariadb_sqlite(cli, sqlite_home: Path, tmp_path: Path, monkeypatch,
                                          mariadb_url: str) -> None:
    from models.db import dispose_all

    monkeypatch.setenv("PATCHFLOW_PROXY_PASSWORD", "pw")
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h", "--msrc-source", str(MSRC_DIR),
               "--winget-source", str(WINGET_DIR), "--winget-packages", ",".join(PACKAGES),
               "--proxy", "http://proxy:3128", "--proxy-user", "u").code == 0
    assert cli("server", "filters", "local", "--languages", "en-US").code == 0
    assert cli("sync", "local").code == 0
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps(FLEET))
    assert cli("endpoints", "import", str(fleet)).code == 0
    assert cli("scan", "--all").code == 0
    content = sqlite_home / "content" / "sha256" / "ab"
    content.mkdir(parents=True)
    (content / ("ab" + "0" * 62)).write_bytes(b"payload")
    source_url = f"sqlite:///{sqlite_home / 'patchflow.db'}"
    original = snapshot(source_url)
    assert len(original["patches"]) == 21 and len(original["missing_patches"]) > 0

    archive = tmp_path / "one.exp"
    r = cli("backup", "--out", str(archive), "--with-content")
    assert r.code == 0, r.err
    assert "1 content files" in r.out

    # Into MariaDB, a different home: every table equal, the content store restored.
    home2 = tmp_path / "home2"
    home2.mkdir()
    monkeypatch.setenv("PATCHFLOW_HOME", str(home2))
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", mariadb_url)
    dispose_all()
    r = cli("restore", str(archive))
    assert r.code == 0, r.err
    assert snapshot(mariadb_url) == original
    assert (home2 / "content" / "sha256" / "ab" / ("ab" + "0" * 62)).read_bytes() == b"payload"
    # Non-empty target: refused without --force, accepted with it.
    r = cli("restore", str(archive))
    assert r.code == 2 and "not empty" in r.err

    # And back into a fresh SQLite database.
    archive2 = tmp_path / "two.exp"
    assert cli("backup", "--out", str(archive2)).code == 0
    home3 = tmp_path / "home3"
    home3.mkdir()
    url3 = f"sqlite:///{home3 / 'patchflow.db'}"
    monkeypatch.setenv("PATCHFLOW_HOME", str(home3))
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", url3)
    dispose_all()
    assert cli("restore", str(archive2)).code == 0
    assert snapshot(url3) == original
    # The restored home lists the same servers (the proxy password needs the original key).
    assert json.loads(cli("server", "list", "--json").out)[0]["name"] == "local"


def test_damaged_archive_is_refused_and_target_untouched(cli, sqlite_home: Path,
                                                         tmp_path: Path) -> None:
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h").code == 0
    archive = tmp_path / "b.exp"
    assert cli("backup", "--out", str(archive)).code == 0
    damaged = tmp_path / "damaged.exp"
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(damaged, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "tables/patch_servers.jsonl":
                data = data.replace(b'"local"', b'"LOCAL"')
            dst.writestr(item, data)
    before = snapshot(f"sqlite:///{sqlite_home / 'patchflow.db'}")
    r = cli("restore", str(damaged), "--force")
    assert r.code == 2 and "SHA-256" in r.err
    truncated = tmp_path / "cut.exp"
    truncated.write_bytes(archive.read_bytes()[:200])
    r = cli("restore", str(truncated), "--force")
    assert (r.code == 2 and "damaged" in r.err) or "not a patchflow backup" in r.err
    assert cli("restore", str(tmp_path / "missing.exp")).code == 2
    assert snapshot(f"sqlite:///{sqlite_home / 'patchflow.db'}") == before
