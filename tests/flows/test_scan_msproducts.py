"""End to end: simulated agents carrying Office 2016, .NET 8 and Edge, a catalog synced
from MSRC documents, the scan flow, `missing --json` and `endpoints show --json`, on SQLite and
MariaDB. Before this, these endpoints were reported Up-to-Date."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.platforms.simulated import SimulatedPlatform
from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
from tests.support.paths import TESTS

pytestmark = pytest.mark.usefixtures("prefect")
HERE = TESTS
OFFICE_2016 = "Microsoft Office 2016 (64-bit edition)"
EDGE = "Microsoft Edge (Chromium-based)"
NET8 = ".NET 8.0 installed on Windows"


def _program(name: str, version: str | None, arch: str = "x64") -> dict:
    return {"name": name, "version": version, "publisher": "Microsoft Corporation",
            "product_code": None, "upgrade_code": None, "arch": arch, "scope": "machine",
            "install_date": None}


def _machine(host: str, programs: list[dict], kbs: list[str], facts: list[dict],
             ubr: int | None = 6000) -> dict:
    return {
        "schema_version": 1, "hostname": host, "domain": "corp.example",
        "os": {"name": "Windows 11 Pro", "display_version": "23H2", "build": 22631, "ubr": ubr,
               "arch": "x64", "language": "en-US", "hotpatch": False,
               "installation_type": "Client"},
        "programs": programs,
        "updates": [{"kb": kb, "installed_on": "2026-10-15"} for kb in kbs],
        "ms_facts": facts,
        "pending_reboot": False,
    }


OFFICE = _program("Microsoft Office Professional Plus 2016", "16.0.4266.1001")
FLEET = [
    # Office 2016 MSI without December's updates, .NET 8.0.8, an old Edge, C2R beside them.
    _machine("OFFICE-01", [
        OFFICE,
        _program("Microsoft .NET Runtime - 8.0.8 (x64)", "8.0.8.24366"),
        _program("Microsoft Edge", "129.0.2792.65", "x86"),
    ], ["KB5900110", "KB5900150"], [
        {"kind": "click_to_run", "name": "O365ProPlusRetail", "version": "16.0.17928.20114",
         "detail": "Current"}]),
    # Everything current: the Office KBs installed (as the agent reports Office's own update
    # entries), .NET 8.0.10, Edge 131.0.2903.112.
    _machine("OFFICE-02", [
        OFFICE,
        _program("Microsoft .NET Runtime - 8.0.10 (x64)", "8.0.10.0"),
        _program("Microsoft Edge", "131.0.2903.112", "x86"),
    ], ["KB5900110", "KB5900150", "KB5002661", "KB4475587", "KB2920716"], []),
    # No UBR reported: stored as unknown, explained as "UBR unknown".
    _machine("NOUBR-01", [], [], [], ubr=None),
]


def _sync_and_import(cli, tmp_path: Path) -> None:
    msrc = tmp_path / "msrc"
    shutil.copytree(MSRC_DIR, msrc)
    shutil.copy(HERE / "fixtures" / "sources" / "msrc_products" / "2024-Dec.xml", msrc)
    assert cli("init").code == 0
    r = cli("server", "add", "local", "--host", "h", "--msrc-source", str(msrc),
            "--winget-source", str(WINGET_DIR), "--winget-packages", ",".join(PACKAGES))
    assert r.code == 0, r.err
    assert cli("sync", "local").code == 0
    docs = []
    for i, machine in enumerate(FLEET):  # each document as a simulated agent collects it
        path = tmp_path / f"agent{i}.json"
        path.write_text(json.dumps(machine))
        docs.append(SimulatedPlatform(path).collect_inventory())
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps(docs))
    r = cli("endpoints", "import", str(fleet))
    assert r.code == 0, r.err


def test_office_dotnet_edge_are_missing_not_up_to_date(cli, home: Path, tmp_path: Path) -> None:
    _sync_and_import(cli, tmp_path)
    r = cli("scan", "--all", "--json")
    assert r.code == 0, r.err
    rows = json.loads(cli("missing", "--json", "--endpoint", "OFFICE-01").out)
    by_kb = {(r["kb"], r["product"]): r for r in rows}
    assert set(by_kb) == {
        ("KB5002661", OFFICE_2016), ("KB4475587", OFFICE_2016), ("KB2920716", OFFICE_2016),
        ("KB5045993", NET8), (None, EDGE)}
    edge = by_kb[(None, EDGE)]
    assert (edge["installed_version"], edge["available_version"]) == (
        "129.0.2792.65", "131.0.2903.112")
    assert edge["reason"] == (
        f"{EDGE}: 129.0.2792.65 < fixed 131.0.2903.112; version-only fix (no KB)")
    net = by_kb[("KB5045993", NET8)]
    assert (net["installed_version"], net["available_version"]) == ("8.0.8", "8.0.10")
    office = by_kb[("KB5002661", OFFICE_2016)]
    assert office["available_version"] == "16.0.5478.1000"
    assert "per-component" in office["reason"]
    assert "OFFICE-02" not in {r["endpoint"] for r in json.loads(cli("missing", "--json").out)}
    states = {e["hostname"]: e for e in json.loads(cli("endpoints", "list", "--json").out)}
    assert states["OFFICE-01"]["scan_state"] == "Missing Patches"
    assert states["OFFICE-02"]["scan_state"] == "Up-to-Date"
    assert states["NOUBR-01"]["build"] == "22631"  # unknown, not "22631.0"

    shown = json.loads(cli("endpoints", "show", "OFFICE-01", "--json").out)[0]
    products = {p["product"]: p for p in shown["ms_products"]}
    assert {OFFICE_2016, NET8, EDGE, "Microsoft Word 2016 (64-bit edition)"} <= set(products)
    assert products[EDGE]["installed_version"] == "129.0.2792.65"
    c2r = [p for p in shown["ms_products"] if p["kind"] == "c2r"]
    assert c2r and "cannot be judged" in c2r[0]["note"]
    # The scan says so too: the endpoint's scan message carries the Click-to-Run caveat.
    from sqlalchemy import select

    from models import Endpoint
    from models.db import session_scope

    with session_scope() as session:
        message = session.scalar(
            select(Endpoint.scan_message).where(Endpoint.hostname == "OFFICE-01"))
    assert message and "is Click-to-Run" in message and "cannot be judged" in message

    explained = cli("missing", "--explain", "OFFICE-01", "KB5002661").out
    assert "per-component update KB5002661" in explained


def test_inventory_without_ubr_is_explained_as_unknown(cli, home: Path, tmp_path: Path) -> None:
    _sync_and_import(cli, tmp_path)
    assert cli("scan", "--all").code == 0
    rows = json.loads(cli("missing", "--json", "--endpoint", "NOUBR-01").out)
    cumulative = next(r for r in rows if r["kb"] == "KB5900110")
    assert cumulative["reason"].startswith("build 22631 (UBR unknown), fixed 22631.6000: KB rule")
    assert cumulative["installed_version"] == "22631"
    assert not any("22631.0" in (r["installed_version"] or "") for r in rows)
