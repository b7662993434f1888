"""The sync flow end to end on SQLite and MariaDB: offline mirrors, the online MSRC API over a
real HTTP server on loopback, filters, bad documents, stop, and an authenticated proxy."""

from __future__ import annotations

import gzip
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
from tests.support.httpserver import authenticated_proxy, serve_files

pytestmark = pytest.mark.usefixtures("prefect")


def _setup(cli, *extra: str, msrc: Path | str = MSRC_DIR, winget: Path | str = WINGET_DIR) -> None:
    assert cli("init").code == 0
    r = cli("server", "add", "local", "--host", "patch.corp.example", "--msrc-source", str(msrc),
            "--winget-source", str(winget), "--winget-packages", ",".join(PACKAGES), *extra)
    assert r.code == 0, r.err


def _server(cli) -> dict:
    return json.loads(cli("server", "list", "--json").out)[0]


def _patches(cli, *args: str) -> list[dict]:
    r = cli("patches", "list", "--json", *args)
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_sync_sample_catalog_then_rerun_skips_unchanged(cli, home: Path) -> None:
    _setup(cli)
    r = cli("sync", "local")
    assert r.code == 0, r.err
    server = _server(cli)
    assert server["sync_status"] == "Successful"
    assert server["sync_status_at"]
    assert "8 documents stored (21 patches)" in server["sync_message"]
    patches = _patches(cli)
    assert len(patches) == 21
    by_key = {p["kb"] or f"{p['package_id']}@{p['version']}": p for p in patches}
    # Supersedence is linked whichever month was stored first (Oct.xml sorts before Sep.json).
    assert by_key["KB5900010"]["superseded_by"] == by_key["KB5900110"]["id"]
    assert by_key["KB5900110"]["superseded_by"] is None
    assert by_key["7zip.7zip@24.08"]["superseded_by"] == by_key["7zip.7zip@25.01"]["id"]
    kb = by_key["KB5900140"]
    assert kb["restart_required"] == "May Require"
    assert kb["severity"] == "Important"
    assert kb["category"] == "Security Updates"
    assert kb["release_date"] == "2026-10-13"
    assert {p["name"] for p in kb["products"]} == {
        "Windows Server 2022", "Windows Server 2022 (Server Core installation)"}
    assert kb["products"][0]["fixed_build"] == "10.0.20348.4200"
    assert kb["products"][0]["supersedes"] == "KB5900040"
    assert kb["cves"] == ["CVE-2026-90104"]
    java = by_key["Oracle.JavaRuntimeEnvironment@8.0.4510.9"]
    assert java["eula_required"] is True and java["category"] == "Applications"

    r = cli("sync", "local")
    assert r.code == 0
    assert "0 documents stored (0 patches), 8 unchanged" in _server(cli)["sync_message"]
    assert len(_patches(cli)) == 21

    shown = json.loads(cli("patches", "show", "KB5900110", "--json").out)
    assert shown["kb"] == "KB5900110" and shown["products"][0]["supersedes"] == "KB5900010"
    shown = json.loads(cli("patches", "show", "7zip.7zip@25.01", "--json").out)
    assert {i["arch"] for i in shown["installers"]} == {"x64", "x86"}
    assert all(len(i["sha256"]) == 64 for i in shown["installers"])
    assert cli("patches", "show", "KB1").code == 2


def test_filters_decide_what_a_server_offers(cli, home: Path) -> None:
    _setup(cli)
    assert cli("server", "filters", "local", "--categories", "Security Updates",
               "--products", "Windows 11 Version 23H2 for x64-based Systems").code == 0
    assert cli("sync", "local").code == 0
    offered = _patches(cli, "--server", "local")
    assert {p["kb"] for p in offered} == {"KB5900010", "KB5900110", "KB5900150"}
    # Widening the filters re-reads the documents even though their bytes did not change.
    assert cli("server", "filters", "local", "--categories", "all", "--products", "all").code == 0
    assert cli("sync", "local").code == 0
    assert len(_patches(cli, "--server", "local")) == 21
    assert [p["package_id"] for p in _patches(cli, "--product", "7-Zip")] == ["7zip.7zip"] * 2
    assert cli("patches", "list", "--severity", "Huge").code == 2


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<cvrf:cvrfdoc xmlns:cvrf="http://www.icasi.org/CVRF/schema/cvrf/1.1">&lol3;</cvrf:cvrfdoc>
"""


def test_bad_documents_fail_alone_and_nothing_is_lost(cli, home: Path, tmp_path: Path,
                                                      db_url: str) -> None:
    msrc = tmp_path / "msrc"
    shutil.copytree(MSRC_DIR, msrc)
    winget = tmp_path / "winget"
    shutil.copytree(WINGET_DIR, winget)
    _setup(cli, msrc=msrc, winget=winget)
    assert cli("sync", "local").code == 0
    before = len(_patches(cli))

    (msrc / "2026-Nov.xml").write_bytes(BILLION_LAUGHS)
    (msrc / "2026-Dec.json").write_text((MSRC_DIR / "2026-Sep.json").read_text()[:700])
    vlc = winget / "manifests/v/VideoLAN/VLC/3.0.21/VideoLAN.VLC.installer.yaml"
    vlc.write_text("PackageIdentifier: VideoLAN.VLC\nPackageVersion: 3.0.21\n"
                   "Installers: {not: a list}\nManifestType: installer\n")
    npp = winget / "manifests/n/Notepad++/Notepad++/8.7.5/Notepad++.Notepad++.installer.yaml"
    text = npp.read_text()
    npp.write_text(text.replace(text.split('"InstallerSha256": "')[1][:64], "XYZ"))

    r = cli("sync", "local")
    assert r.code == 1
    assert "Traceback" not in r.err + r.out
    server = _server(cli)
    assert server["sync_status"] == "Failed"
    assert "documents failed" in server["sync_message"]
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        failed = dict(conn.execute(sa.text(
            "SELECT doc_key, message FROM sync_documents WHERE status = 'failed'")).all())
    engine.dispose()
    assert set(failed) >= {"2026-Nov", "2026-Dec"}
    assert "DTD" in failed["2026-Nov"] or "entit" in failed["2026-Nov"].lower()
    assert all("\n" not in m for m in failed.values())
    # VLC 3.0.21 and Notepad++ 8.7.5 are skipped with a reason, the older versions stay.
    keys = {f"{p['package_id']}@{p['version']}" for p in _patches(cli, "--source", "winget")}
    assert "VideoLAN.VLC@3.0.20" in keys and "Notepad++.Notepad++@8.6.9" in keys
    assert len(_patches(cli)) == before


def _online_msrc(server) -> None:
    """Serve the sample months as the MSRC API would: /updates plus /cvrf/<ID> as JSON."""
    sep = (MSRC_DIR / "2026-Sep.json").read_bytes()
    server.files["/cvrf/v3.0/cvrf/2026-Sep"] = sep
    server.files["/cvrf/v3.0/updates"] = json.dumps({"value": [
        {"ID": "2026-Sep", "CurrentReleaseDate": "2026-09-08T07:00:00Z",
         "InitialReleaseDate": "2026-09-08T07:00:00Z",
         "CvrfUrl": f"{server.url}/cvrf/v3.0/cvrf/2026-Sep"},
    ]}).encode()


def test_online_msrc_skips_unchanged_months_without_downloading(cli, home: Path) -> None:
    with serve_files() as server:
        _online_msrc(server)
        _setup(cli, msrc=f"{server.url}/cvrf/v3.0/", winget="none")
        assert cli("sync", "local").code == 0
        assert len(_patches(cli)) == 4
        downloads = [p for p, _ in server.requests if p.endswith("2026-Sep")]
        assert len(downloads) == 1
        assert all(h.get("Accept") == "application/json" for p, h in server.requests
                   if p.endswith("2026-Sep"))
        assert cli("sync", "local").code == 0
        assert len([p for p, _ in server.requests if p.endswith("2026-Sep")]) == 1


def test_unreachable_source_fails_with_reason_and_keeps_catalog(cli, home: Path) -> None:
    with serve_files() as server:
        _online_msrc(server)
        _setup(cli, msrc=f"{server.url}/cvrf/v3.0/", winget="none")
        assert cli("sync", "local").code == 0
        url = server.url
    # The server is gone now.
    assert cli("server", "edit", "local", "--msrc-source", f"{url}/cvrf/v3.0/").code == 0
    r = cli("sync", "local")
    assert r.code == 1
    assert "Traceback" not in r.err
    server_row = _server(cli)
    assert server_row["sync_status"] == "Failed"
    assert "cannot connect" in server_row["sync_message"]
    assert len(_patches(cli)) == 4


def test_sync_through_authenticated_proxy(cli, home: Path, monkeypatch) -> None:
    with serve_files() as server, authenticated_proxy("svc", "pw") as proxy:
        _online_msrc(server)
        monkeypatch.setenv("PATCHFLOW_PROXY_PASSWORD", "pw")
        _setup(cli, "--proxy", str(proxy["url"]), "--proxy-user", "svc",
               msrc=f"{server.url}/cvrf/v3.0/", winget="none")
        assert cli("sync", "local").code == 0
        assert proxy["seen"] == 2 and proxy["refused"] == 0
        assert len(_patches(cli)) == 4
        monkeypatch.setenv("PATCHFLOW_PROXY_PASSWORD", "wrong")
        assert cli("server", "edit", "local", "--proxy-user", "svc").code == 0
        assert cli("server", "filters", "local", "--categories", "Updates").code == 0
        r = cli("sync", "local")
        assert r.code == 1
        assert proxy["refused"] >= 1
        message = _server(cli)["sync_message"]
        assert "pw" not in message and "wrong" not in message


def test_stop_a_running_sync(cli, home: Path) -> None:
    with serve_files() as server:
        docs = []
        for month in ("Jan", "Feb", "Mar", "Apr", "May", "Jun"):
            raw = (MSRC_DIR / "2026-Sep.json").read_bytes()
            server.files[f"/cvrf/v3.0/cvrf/2026-{month}"] = raw
            docs.append({"ID": f"2026-{month}", "CurrentReleaseDate": "2026-09-08T07:00:00Z",
                         "CvrfUrl": f"{server.url}/cvrf/v3.0/cvrf/2026-{month}"})
        server.files["/cvrf/v3.0/updates"] = json.dumps({"value": docs}).encode()
        server.delay = 0.4
        _setup(cli, msrc=f"{server.url}/cvrf/v3.0/", winget="none")

        from flows.sync import sync as sync_flow

        outcome: dict = {}
        runner = threading.Thread(target=lambda: outcome.update(sync_flow("local")))
        runner.start()
        deadline = time.monotonic() + 60
        while _server(cli)["sync_status"] != "Running" and time.monotonic() < deadline:
            time.sleep(0.1)
        while ("MSRC document" not in (_server(cli)["sync_message"] or "")
               and time.monotonic() < deadline):
            time.sleep(0.05)
        r = cli("sync", "local", "--stop")
        assert r.code == 0, r.err
        runner.join(60)
    assert outcome["status"] == "Stopped"
    row = _server(cli)
    assert row["sync_status"] == "Stopped"
    fetched = len([p for p, _ in server.requests if "/cvrf/2026-" in p])
    assert fetched < 6
    assert cli("sync", "local", "--stop").code == 2  # nothing running now


def test_gzip_xml_mirror_with_real_months(cli, home: Path, tmp_path: Path) -> None:
    from tests.conftest import shared_fixtures

    real = shared_fixtures("msrc")
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name in ("2024-Jan.xml.gz", "2024-Feb.xml.gz"):
        shutil.copy(real / name, folder / name)
    _setup(cli, msrc=folder, winget="none")
    assert cli("sync", "local").code == 0
    jan_kbs = {p["kb"] for p in _patches(cli) if p["release_date"] and
               p["release_date"].startswith("2024-01")}
    assert len(jan_kbs) >= 30
    assert gzip.decompress((real / "2024-Jan.xml.gz").read_bytes())[:5] == b"<cvrf"
