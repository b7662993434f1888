"""The online winget source against a real HTTP server on loopback.

Each test builds a small `source.msix` the way the winget community source publishes it: a zip
holding `Public/index.db`, a SQLite index in the V1 schema of microsoft/winget-cli (`manifest`
rows pointing at `ids`, `versions` and a `pathparts` tree, plus the 1.3+ `hash` column with the
manifest's SHA-256), and serves it with one merged manifest per version under `/cache/`.
Manifests come from the project's sample catalog, and from the real winget-pkgs manifests in
../shared/fixtures when that folder exists.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from patchflow.http import make_session
from patchflow.sample_catalog import WINGET_DIR
from sources import winget_online
from sources.records import ParsedDocument, SourceError
from sources.winget import DEFAULT_PACKAGES, find_package_dirs, parse_package_dir
from tests.support.httpserver import FileServer, serve_files

SAMPLE = WINGET_DIR / "manifests"


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    winget_online.clear_cache()
    yield
    winget_online.clear_cache()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()  # no retries: a refused connection should fail at once
    yield session
    session.close()


# --------------------------------------------------------------------------------------------
# Building a source


def merged_manifest(version_dir: Path) -> bytes:
    """One merged manifest from a winget-pkgs version folder, as the community source serves it."""
    docs = {}
    locales = []
    for file in sorted(version_dir.glob("*.yaml")):
        data = yaml.safe_load(file.read_bytes())
        kind = data["ManifestType"].casefold()
        if kind in ("singleton", "merged"):
            return file.read_bytes()
        if kind == "locale":
            locales.append({k: v for k, v in data.items() if k not in (
                "PackageIdentifier", "PackageVersion", "ManifestType", "ManifestVersion")})
        else:
            docs[kind] = data
    merged: dict = {}
    for kind in ("version", "defaultlocale", "installer"):
        merged.update({k: v for k, v in docs[kind].items() if k != "ManifestType"})
    # `PackageVersion: 25.01` unquoted loads as a float; the folder name is the version text.
    merged["PackageVersion"] = version_dir.name
    if locales:
        merged["Localization"] = locales
    merged["ManifestType"] = "merged"
    return yaml.safe_dump(merged, sort_keys=False, allow_unicode=True).encode()


class IndexBuilder:
    """A V1 winget index: schema 1.x with named rowids and the hash column, or 1.0 without."""

    def __init__(self, *, v1_0: bool = False, major: int = 1) -> None:
        self.v1_0 = v1_0
        self.con = sqlite3.connect(":memory:")
        key = ("{0} TEXT NOT NULL PRIMARY KEY" if v1_0
               else "rowid INTEGER PRIMARY KEY, {0} TEXT NOT NULL")
        tables = {"ids": "id", "names": "name", "monikers": "moniker", "versions": "version",
                  "channels": "channel"}
        for table, column in tables.items():
            self.con.execute(f"CREATE TABLE {table}({key.format(column)})")
        self.con.execute("CREATE TABLE metadata(name TEXT PRIMARY KEY NOT NULL, value TEXT)")
        self.con.executemany("INSERT INTO metadata VALUES (?, ?)",
                             [("majorVersion", str(major)),
                              ("minorVersion", "7" if major == 1 and not v1_0 else "0")])
        self.con.execute("CREATE TABLE pathparts(rowid INTEGER PRIMARY KEY, parent INT64, "
                         "pathpart TEXT NOT NULL)")
        self.con.execute(
            "CREATE TABLE manifest(rowid INTEGER PRIMARY KEY, id INT64 NOT NULL, "
            "name INT64 NOT NULL, moniker INT64 NOT NULL, version INT64 NOT NULL, "
            "channel INT64 NOT NULL, pathpart INT64 NOT NULL"
            + ("" if v1_0 else ", hash BLOB") + ")"
        )

    def _value(self, table: str, column: str, value: str) -> int:
        row = self.con.execute(f"SELECT rowid FROM {table} WHERE {column} = ?", (value,)).fetchone()
        if row:
            return row[0]
        return self.con.execute(f"INSERT INTO {table}({column}) VALUES (?)", (value,)).lastrowid

    def _path(self, path: str) -> int:
        parent = None
        for part in path.split("/"):
            row = self.con.execute("SELECT rowid FROM pathparts WHERE parent IS ? AND pathpart = ?",
                                   (parent, part)).fetchone()
            parent = row[0] if row else self.con.execute(
                "INSERT INTO pathparts(parent, pathpart) VALUES (?, ?)", (parent, part)).lastrowid
        assert parent is not None
        return parent

    def add(self, package_id: str, version: str, path: str, data: bytes,
            digest: bytes | None = None) -> None:
        values = [self._value("ids", "id", package_id), self._value("names", "name", package_id),
                  self._value("monikers", "moniker", ""),
                  self._value("versions", "version", version),
                  self._value("channels", "channel", ""), self._path(path)]
        if self.v1_0:
            self.con.execute("INSERT INTO manifest(id, name, moniker, version, channel, pathpart) "
                             "VALUES (?, ?, ?, ?, ?, ?)", values)
        else:
            sha = hashlib.sha256(data).digest() if digest is None else digest
            self.con.execute("INSERT INTO manifest(id, name, moniker, version, channel, pathpart, "
                             "hash) VALUES (?, ?, ?, ?, ?, ?, ?)", [*values, sha])

    def database(self) -> bytes:
        self.con.commit()
        return self.con.serialize()

    def msix(self) -> bytes:
        return make_msix({"Public/index.db": self.database()})


def make_msix(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr("AppxManifest.xml", b"<Package/>")
        for name, data in members.items():
            package.writestr(name, data)
    return buffer.getvalue()


def manifest_path(package_id: str, version: str) -> str:
    publisher_and_name = "/".join(package_id.split("."))
    return f"manifests/{package_id[0].lower()}/{publisher_and_name}/{version}/{package_id}.yaml"


def publish(server: FileServer, packages: dict[str, Path], builder: IndexBuilder | None = None,
            ) -> IndexBuilder:
    """Serve every version folder of each package under /cache, indexed in source.msix."""
    builder = builder or IndexBuilder()
    for package_id, folder in packages.items():
        for version_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
            if not any(version_dir.glob("*.yaml")):
                continue
            data = merged_manifest(version_dir)
            path = manifest_path(package_id, version_dir.name)
            builder.add(package_id, version_dir.name, path, data)
            server.files[f"/cache/{path}"] = data
    server.files["/cache/source.msix"] = builder.msix()
    return builder


def _sample(*ids: str) -> dict[str, Path]:
    found = find_package_dirs(SAMPLE, ids)
    assert set(found) == set(ids)
    return found


def _count(server: FileServer, suffix: str) -> int:
    return sum(1 for path, _ in server.requests if path.endswith(suffix))


# --------------------------------------------------------------------------------------------
# fetch_package


def test_versions_found_parsed_and_linked(http: requests.Session) -> None:
    with serve_files() as server:
        publish(server, _sample("7zip.7zip", "Notepad++.Notepad++", "VideoLAN.VLC"))
        doc = winget_online.fetch_package(http, f"{server.url}/cache", "7zip.7zip")
        assert isinstance(doc, ParsedDocument)
        assert doc.key == "7zip.7zip"
        assert [p.key for p in doc.patches] == ["7zip.7zip@24.08", "7zip.7zip@25.01"]
        old, new = doc.patches
        assert old.superseded_by == new.key and new.supersedes == (old.key,)
        assert new.title == "7-Zip 25.01" and new.vendor == "Igor Pavlov"
        assert {i.arch for i in new.installers} == {"x64", "x86"}
        assert all(len(i.sha256) == 64 for i in new.installers)
        assert doc.release_date == new.release_date
        assert doc.errors == []

        # Same package again, typed in another case, through a trailing slash: same document,
        # and source.msix is not downloaded a second time.
        again = winget_online.fetch_package(http, f"{server.url}/cache/", "7ZIP.7zip")
        assert again.key == "7ZIP.7zip"
        assert again.content_hash == doc.content_hash
        assert [p.key for p in again.patches] == [p.key for p in doc.patches]

        # `+` in a path stays as published (winget-pkgs folder names).
        npp = winget_online.fetch_package(http, f"{server.url}/cache", "Notepad++.Notepad++")
        assert [p.version for p in npp.patches] == ["8.6.9", "8.7.5"]
        assert _count(server, "/cache/source.msix") == 1
        assert any("/Notepad++/Notepad++/8.7.5/" in p for p, _ in server.requests)


def test_offline_and_online_parse_the_same_sample_package(http: requests.Session) -> None:
    with serve_files() as server:
        packages = _sample("Oracle.JavaRuntimeEnvironment", "Mozilla.Firefox")
        publish(server, packages)
        for package_id, folder in packages.items():
            online = winget_online.fetch_package(http, f"{server.url}/cache", package_id)
            offline = parse_package_dir(folder)
            assert online.patches == offline.patches


def test_real_winget_manifests_through_the_online_source(http: requests.Session) -> None:
    """Every real package in ../shared/fixtures/winget, served merged, parses as offline."""
    from tests.conftest import shared_fixtures

    real = shared_fixtures("winget", "manifests")
    packages = find_package_dirs(real, DEFAULT_PACKAGES)
    assert len(packages) >= 7, sorted(packages)
    with serve_files() as server:
        publish(server, packages)
        for package_id, folder in packages.items():
            online = winget_online.fetch_package(http, f"{server.url}/cache", package_id)
            offline = parse_package_dir(folder)
            assert [p.key for p in online.patches] == [p.key for p in offline.patches]
            assert online.patches == offline.patches, package_id
        assert _count(server, "/cache/source.msix") == 1
    zip7 = packages["7zip.7zip"]
    assert [d.name for d in sorted(zip7.iterdir())] == ["19.00", "23.01", "26.03"]


def test_package_missing_from_index_names_it(http: requests.Session) -> None:
    with serve_files() as server:
        publish(server, _sample("7zip.7zip"))
        with pytest.raises(SourceError, match=r"^Example\.Missing: not found in the winget "
                                              r"source http://127\.0\.0\.1:\d+/cache$"):
            winget_online.fetch_package(http, f"{server.url}/cache", "Example.Missing")


def test_manifest_not_matching_index_hash_fails_the_package(http: requests.Session) -> None:
    with serve_files() as server:
        publish(server, _sample("7zip.7zip"))
        path = "/cache/" + manifest_path("7zip.7zip", "25.01")
        server.files[path] = server.files[path].replace(b"7-Zip", b"7-Zap")
        with pytest.raises(SourceError) as caught:
            winget_online.fetch_package(http, f"{server.url}/cache", "7zip.7zip")
    message = str(caught.value)
    assert message.startswith("7zip.7zip@25.01: manifest ")
    assert "does not match the index's SHA-256" in message and "\n" not in message


def test_index_without_hash_column_is_read_unverified(http: requests.Session) -> None:
    with serve_files() as server:
        publish(server, _sample("7zip.7zip"), IndexBuilder(v1_0=True))
        path = "/cache/" + manifest_path("7zip.7zip", "25.01")
        server.files[path] = server.files[path].replace(b"7-Zip", b"7-Zap")
        doc = winget_online.fetch_package(http, f"{server.url}/cache", "7zip.7zip")
    assert doc.patches[-1].title == "7-Zap 25.01"


def test_malformed_hash_in_index_fails(http: requests.Session) -> None:
    with serve_files() as server:
        builder = IndexBuilder()
        data = merged_manifest(SAMPLE / "7/7zip/7zip/25.01")
        builder.add("7zip.7zip", "25.01", manifest_path("7zip.7zip", "25.01"), data,
                    digest=b"\x01\x02")
        server.files["/cache/" + manifest_path("7zip.7zip", "25.01")] = data
        server.files["/cache/source.msix"] = builder.msix()
        with pytest.raises(SourceError, match=r"7zip\.7zip@25\.01: the index's manifest hash"):
            winget_online.fetch_package(http, f"{server.url}/cache", "7zip.7zip")


def _truncated(msix: bytes) -> bytes:
    return msix[: len(msix) // 2]


def _no_index(_msix: bytes) -> bytes:
    return make_msix({"Public/other.db": b"x"})


def _not_sqlite(_msix: bytes) -> bytes:
    return make_msix({"Public/index.db": b"this is not a database" * 100})


def _no_manifest_table(_msix: bytes) -> bytes:
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE ids(rowid INTEGER PRIMARY KEY, id TEXT)")
    return make_msix({"Public/index.db": con.serialize()})


def _v2_schema(_msix: bytes) -> bytes:
    return IndexBuilder(major=2).msix()


@pytest.mark.parametrize(("damage", "reason"), [
    (_truncated, "not a valid source package"),
    (_no_index, "no Public/index.db in the package"),
    (_not_sqlite, "Public/index.db is unreadable"),
    (_no_manifest_table, "not a V1 winget index (no table manifest, versions, pathparts)"),
    (_v2_schema, "schema 2.0 is not supported"),
])
def test_bad_source_package_fails_with_one_line(http: requests.Session, damage, reason) -> None:
    with serve_files() as server:
        publish(server, _sample("7zip.7zip"))
        server.files["/cache/source.msix"] = damage(server.files["/cache/source.msix"])
        with pytest.raises(SourceError) as caught:
            winget_online.fetch_package(http, f"{server.url}/cache", "7zip.7zip")
    message = str(caught.value)
    assert message.startswith(f"7zip.7zip: winget index {server.url}/cache/source.msix")
    assert reason in message and "\n" not in message


def test_download_cut_short_fails(http: requests.Session) -> None:
    with serve_files() as server:
        publish(server, _sample("7zip.7zip"))
        server.fail_after["/cache/source.msix"] = 100
        with pytest.raises(SourceError, match=r"^7zip\.7zip: winget index .*source\.msix: "
                                              r"the download was cut short"):
            winget_online.fetch_package(http, f"{server.url}/cache", "7zip.7zip")


def test_missing_manifest_and_unparseable_version(http: requests.Session) -> None:
    with serve_files() as server:
        publish(server, _sample("7zip.7zip"))
        old = "/cache/" + manifest_path("7zip.7zip", "24.08")
        del server.files[old]
        with pytest.raises(SourceError, match=r"^7zip\.7zip@24\.08: manifest download failed: "
                                              r"HTTP 404 from "):
            winget_online.fetch_package(http, f"{server.url}/cache", "7zip.7zip")

        # A manifest that downloads fine but is no usable manifest costs that version only.
        winget_online.clear_cache()
        bad = b"PackageIdentifier: 7zip.7zip\nPackageVersion: '24.08'\nManifestType: merged\n"
        builder = IndexBuilder()
        for version, data in (("24.08", bad),
                              ("25.01", merged_manifest(SAMPLE / "7/7zip/7zip/25.01"))):
            builder.add("7zip.7zip", version, manifest_path("7zip.7zip", version), data)
            server.files["/cache/" + manifest_path("7zip.7zip", version)] = data
        server.files["/cache/source.msix"] = builder.msix()
        doc = winget_online.fetch_package(http, f"{server.url}/cache", "7zip.7zip")
    assert [p.version for p in doc.patches] == ["25.01"]
    assert len(doc.errors) == 1 and "24.08" in doc.errors[0]


def test_unreachable_source_fails_every_package_at_once() -> None:
    with serve_files() as server:
        url = f"{server.url}/cache"
    http = make_session(retries=0)
    with pytest.raises(SourceError, match=r"^7zip\.7zip: winget index .* cannot connect"):
        winget_online.fetch_package(http, url, "7zip.7zip")
    # The failure is remembered briefly: the next package fails the same way without waiting.
    with pytest.raises(SourceError, match=r"^VideoLAN\.VLC: winget index .* cannot connect"):
        winget_online.fetch_package(http, url, "VideoLAN.VLC")


def test_failures_are_remembered_then_retried(http: requests.Session, monkeypatch) -> None:
    with serve_files() as server:
        server.status["/cache/source.msix"] = 404
        for package_id in ("7zip.7zip", "VideoLAN.VLC"):
            with pytest.raises(SourceError, match="HTTP 404"):
                winget_online.fetch_package(http, f"{server.url}/cache", package_id)
        assert _count(server, "/cache/source.msix") == 1

        del server.status["/cache/source.msix"]
        publish(server, _sample("7zip.7zip"))
        monkeypatch.setattr(winget_online, "FAILURE_SECONDS", 0.0)
        doc = winget_online.fetch_package(http, f"{server.url}/cache", "7zip.7zip")
        assert len(doc.patches) == 2


def test_stale_index_is_downloaded_again(http: requests.Session, monkeypatch) -> None:
    def versions() -> list[str]:
        doc = winget_online.fetch_package(http, f"{server.url}/cache", "7zip.7zip")
        return [p.version or "" for p in doc.patches]

    with serve_files() as server:
        builder = publish(server, _sample("7zip.7zip"))
        assert versions() == ["24.08", "25.01"]
        # A new version is published; within FRESH_SECONDS the cached index is still used.
        data = merged_manifest(SAMPLE / "7/7zip/7zip/25.01").replace(b"25.01", b"26.00")
        builder.add("7zip.7zip", "26.00", manifest_path("7zip.7zip", "26.00"), data)
        server.files["/cache/" + manifest_path("7zip.7zip", "26.00")] = data
        server.files["/cache/source.msix"] = builder.msix()
        assert versions() == ["24.08", "25.01"]
        monkeypatch.setattr(winget_online, "FRESH_SECONDS", 0.0)
        assert versions() == ["24.08", "25.01", "26.00"]
        assert _count(server, "/cache/source.msix") == 2


# --------------------------------------------------------------------------------------------
# End to end: `patchflow sync` against the online source


@pytest.mark.usefixtures("prefect")
def test_sync_from_online_winget_source(cli, home: Path, tmp_path: Path) -> None:
    msrc = tmp_path / "msrc-empty"
    msrc.mkdir()
    with serve_files() as server:
        publish(server, _sample("7zip.7zip", "VideoLAN.VLC"))
        assert cli("init").code == 0
        r = cli("server", "add", "local", "--host", "h", "--msrc-source", str(msrc),
                "--winget-source", f"{server.url}/cache", "--winget-packages", "7zip.7zip")
        assert r.code == 0, r.err
        r = cli("sync", "local")
        assert r.code == 0, r.err + r.out
        server_row = json.loads(cli("server", "list", "--json").out)[0]
        assert server_row["sync_status"] == "Successful"
        assert "1 documents stored (2 patches)" in server_row["sync_message"]
        patches = json.loads(cli("patches", "list", "--json", "--source", "winget").out)
        by_version = {p["version"]: p for p in patches}
        assert set(by_version) == {"24.08", "25.01"}
        assert by_version["24.08"]["superseded_by"] == by_version["25.01"]["id"]
        assert by_version["25.01"]["package_id"] == "7zip.7zip"

        # Unchanged: skipped on the next sync.
        assert cli("sync", "local").code == 0
        assert "0 documents stored (0 patches), 1 unchanged" in json.loads(
            cli("server", "list", "--json").out)[0]["sync_message"]

        # A manifest that no longer matches the index fails the package; nothing is lost.
        path = "/cache/" + manifest_path("7zip.7zip", "25.01")
        server.files[path] = server.files[path] + b"# tampered\n"
        r = cli("sync", "local")
        assert r.code == 1
        assert "Traceback" not in r.err + r.out
        server_row = json.loads(cli("server", "list", "--json").out)[0]
        assert server_row["sync_status"] == "Failed"
        assert "does not match the index's SHA-256" in server_row["sync_message"]
        assert len(json.loads(cli("patches", "list", "--json", "--source", "winget").out)) == 2
