"""`--msrc-source wsusscn2.cab` (or its extracted folder) through the sync flow, on SQLite and
MariaDB: categories and filters, skipping an unchanged catalog, and a damaged catalog that fails
with its reason while the catalog keeps what it had."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.sources.test_sources_wsusscn2 import FIXTURE, _copy, needs_cabextract
from tests.support.cabfile import pack_catalog

pytestmark = pytest.mark.usefixtures("prefect")


def _add(cli, source: Path) -> None:
    assert cli("init").code == 0
    result = cli("server", "add", "local", "--host", "patch.corp.example", "--msrc-source",
                 str(source), "--winget-source", "none")
    assert result.code == 0, result.err


def _server(cli) -> dict:
    return json.loads(cli("server", "list", "--json").out)[0]


def _patches(cli, *args: str) -> list[dict]:
    result = cli("patches", "list", "--json", *args)
    assert result.code == 0, result.err
    return json.loads(result.out)


@needs_cabextract
def test_sync_from_the_cabinet_then_filters(cli, home: Path, tmp_path: Path) -> None:
    cab = pack_catalog(FIXTURE, tmp_path / "wsusscn2.cab")
    _add(cli, cab)
    result = cli("sync", "local")
    assert result.code == 0, result.out + result.err
    server = _server(cli)
    assert server["sync_status"] == "Successful"
    assert "(11 patches)" in server["sync_message"]
    patches = _patches(cli, "--source", "wsus")
    assert len(patches) == 11
    assert len({p["category"] for p in patches}) == 10
    by_kb = {p["kb"]: p for p in patches if p["kb"]}
    assert by_kb["KB5033375"]["superseded_by"] == by_kb["KB5034123"]["id"]
    shown = json.loads(cli("patches", "show", "KB5034123", "--json").out)
    assert [p["name"] for p in shown["products"]] == ["Windows 11", "Windows Server 2022"]
    assert shown["restart_required"] == "Required" and shown["severity"] == "Critical"
    assert shown["installers"][0]["type"] == "msu"
    assert _patches(cli, "--category", "Drivers")[0]["title"].startswith("Intel - Display")

    again = cli("sync", "local")
    assert again.code == 0
    assert "0 documents stored (0 patches), 1 unchanged" in _server(cli)["sync_message"]

    assert cli("server", "filters", "local", "--categories", "Security Updates,Updates",
               "--languages", "de-DE", "--products", "Windows 11").code == 0
    assert cli("sync", "local").code == 0
    offered = {p["kb"] for p in _patches(cli, "--server", "local")}
    assert offered == {"KB5034123", "KB5033375", "KB5034467"}


def test_a_missing_fragment_fails_the_sync_and_keeps_the_catalog(
    cli, sqlite_home: Path, tmp_path: Path
) -> None:
    catalog = _copy(tmp_path)
    _add(cli, catalog)
    assert cli("sync", "local").code == 0
    before = _patches(cli)
    (catalog / "package2" / "x" / "104").unlink()
    shutil.copy(FIXTURE / "package2" / "l" / "en" / "104", catalog / "package2" / "x" / "999")
    result = cli("sync", "local")
    assert result.code == 1
    assert "Traceback" not in result.out + result.err
    server = _server(cli)
    assert server["sync_status"] == "Failed"
    assert "fragment package2/x/104" in server["sync_message"]
    assert _patches(cli) == before


def test_nothing_is_stored_from_an_incomplete_catalog(cli, sqlite_home: Path,
                                                       tmp_path: Path) -> None:
    catalog = _copy(tmp_path)
    (catalog / "package3" / "l" / "en" / "304").unlink()
    _add(cli, catalog)
    assert cli("sync", "local").code == 1
    assert "package3/l/en/304" in _server(cli)["sync_message"]
    assert _patches(cli) == []


def test_a_file_source_must_be_a_cabinet(cli, sqlite_home: Path, tmp_path: Path) -> None:
    not_cab = tmp_path / "wsusscn2.cab"
    not_cab.write_text("hello")
    assert cli("init").code == 0
    result = cli("server", "add", "local", "--host", "h", "--msrc-source", str(not_cab))
    assert result.code == 2
    assert "a file must be a wsusscn2.cab cabinet" in result.err
