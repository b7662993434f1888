"""The Windows collector, fed through its reader interface with real captured outputs from
../shared/fixtures/inventory (wmic qfe in UTF-16LE, systeminfo, a Get-ItemProperty listing of
the Uninstall key) and a hand-made registry of a Windows 11 machine."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from agent.platforms.windows import parsers
from agent.platforms.windows.collector import UNINSTALL_32, WindowsCollector
from agent.platforms.windows.readers import HKLM, CannedRunner, DictRegistry
from patchflow.fleet.inventory import validate_documents
from tests.conftest import shared_fixtures
from tests.support.paths import FIXTURES

HERE = FIXTURES / "agent"
CV = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion"


def _win11_keys() -> dict[str, dict[str, Any]]:
    return dict(json.loads((HERE / "win11_registry.json").read_text())["keys"])


def _wesng(name: str) -> bytes:
    return shared_fixtures("inventory", "wesng-validation", name).read_bytes()


def test_wmic_qfe_utf16_tables_parse() -> None:
    text = parsers.decode_output(_wesng("10_1809_x64_pro_en-us_20190307_qfe.txt"))
    assert parsers.parse_qfe_table(text) == [
        ("KB4486553", dt.date(2019, 3, 7)), ("KB4470788", dt.date(2019, 3, 1)),
        ("KB4480056", dt.date(2019, 3, 7)), ("KB4487038", dt.date(2019, 3, 1)),
        ("KB4482887", dt.date(2019, 3, 7)),
    ]
    win7 = parsers.parse_qfe_table(
        parsers.decode_output(_wesng("7_sp1_x64_enterprise_en-us_20190305_qfe.txt")))
    assert len(win7) > 250
    assert all(kb.startswith("KB") and day is not None for kb, day in win7)
    # systeminfo truncates its hotfix list; QFE is the fuller source.
    info = parsers.parse_systeminfo(
        parsers.decode_output(_wesng("7_sp1_x64_enterprise_en-us_20190305_systeminfo.txt")))
    assert set(info["hotfixes"]) <= {kb for kb, _day in win7}  # type: ignore[arg-type]
    assert len(info["hotfixes"]) < len(win7)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "expected"), [
    ("10_1809_x64_pro_en-us_20190307_systeminfo.txt",
     {"os_name": "Windows 10 Pro", "build": 17763, "arch": "x64", "language": "en-US"}),
    ("11_24H2_x64_enterprise_systeminfo.txt",
     {"os_name": "Windows 11 Enterprise LTSC", "build": 26100, "arch": "x64"}),
    ("srv_2022_systeminfo.txt",
     {"os_name": "Windows Server 2022 Standard", "build": 20348, "hostname": "WIN-RIBN7SM07BK"}),
])
def test_systeminfo_parses(name: str, expected: dict[str, Any]) -> None:
    info = parsers.parse_systeminfo(parsers.decode_output(_wesng(name)))
    assert {key: info[key] for key in expected} == expected


def _uninstall_listing_as_registry() -> DictRegistry:
    """The real Get-ItemProperty listing of the 32-bit Uninstall key, turned back into keys:
    one key per row, blank rows being keys without a DisplayName."""
    path = shared_fixtures("inventory", "uninstall-registry",
                           "bgoonz_wow6432node_uninstall_get-itemproperty.txt")
    text = parsers.decode_output(path.read_bytes())
    table = text[text.index("DisplayName"):text.index("PS C:")]  # drop the prompt and fences
    keys: dict[str, dict[str, Any]] = {
        CV: {"ProductName": "Windows 10 Pro", "CurrentBuild": "19045", "UBR": 4170},
        r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\Session Manager\Environment":
            {"PROCESSOR_ARCHITECTURE": "AMD64"},
    }
    for index, row in enumerate(parsers.parse_table(table)):
        values = {name: value for name, value in row.items() if value}
        keys[f"{HKLM}\\{UNINSTALL_32}\\Key{index:03d}"] = values
    return DictRegistry(keys)


def test_programs_from_the_real_uninstall_listing() -> None:
    registry = _uninstall_listing_as_registry()
    assert len(registry.subkeys(HKLM, UNINSTALL_32)) > 50  # blank rows are keys too
    collector = WindowsCollector(registry, CannedRunner({}))
    programs = collector.programs()
    names = [p["name"] for p in programs]
    assert "" not in names and len(programs) == 33  # the keys without DisplayName are skipped
    assert names.count("ScreenToGif") == 2  # two versions installed side by side: both kept
    chrome = next(p for p in programs if p["name"] == "Google Chrome")
    assert chrome == {"name": "Google Chrome", "version": "91.0.4472.77",
                      "publisher": "Google LLC", "product_code": None, "upgrade_code": None,
                      "arch": "x86", "scope": "machine", "install_date": "2021-05-26"}
    heroku = next(p for p in programs if p["name"] == "heroku")
    assert heroku["version"] is None and heroku["install_date"] is None
    doc = collector.collect()
    assert validate_documents(doc)[0].os.name == "Windows 10 Pro"


def test_windows_11_machine_from_registry_and_commands() -> None:
    qfe = _wesng("10_1809_x64_pro_en-us_20190307_qfe.txt")  # real UTF-16LE wmic output
    runner = CannedRunner({"wmic qfe": qfe})
    collector = WindowsCollector(DictRegistry(_win11_keys()), runner)
    doc = collector.collect()
    validate_documents(doc)
    assert doc["hostname"] == "WS-0042" and doc["domain"] == "corp.example"
    # "Windows 10" in ProductName is fixed up from the build; the UI language comes from the
    # MUI language whose LCID matches InstallLanguage (0407).
    assert doc["os"] == {"name": "Windows 11 Pro", "display_version": "23H2", "build": 22631,
                         "ubr": 3737, "arch": "x64", "language": "de-DE", "hotpatch": False,
                         "installation_type": "Client"}
    programs = {p["name"]: p for p in doc["programs"]}
    assert sorted(programs) == ["7-Zip 23.01 (x64 edition)", "Mozilla Firefox (x64 en-US)",
                                "Notepad++ (64-bit x64)", "PuTTY release 0.81",
                                "VLC media player"]
    seven = programs["7-Zip 23.01 (x64 edition)"]
    assert seven["product_code"] == "{23170F69-40C1-2702-2301-000001000000}"
    assert seven["upgrade_code"] == "{23170F69-40C1-2702-0000-000004000000}"
    assert (seven["arch"], seven["scope"], seven["install_date"]) == ("x64", "machine",
                                                                      "2024-01-15")
    assert programs["Mozilla Firefox (x64 en-US)"]["install_date"] is None
    assert programs["VLC media player"]["arch"] == "x86"
    assert programs["VLC media player"]["product_code"].startswith("{9C1E5CA8")
    assert (programs["Notepad++ (64-bit x64)"]["scope"],
            programs["Notepad++ (64-bit x64)"]["arch"]) == ("user", None)
    updates = {u["kb"]: u["installed_on"] for u in doc["updates"]}
    # QFE's five, plus what only the servicing package list knows (installed states only).
    assert {"KB4486553", "KB4482887", "KB5034441", "KB5035845"} <= set(updates)
    assert "KB5011048" not in updates  # staged, not installed
    assert updates["KB4486553"] == "2019-03-07" and updates["KB5034441"] == "2024-01-10"
    assert doc["pending_reboot"] is True  # CBS RebootPending
    assert runner.calls[0] == "wmic qfe"


def test_qfe_falls_back_to_powershell_when_wmic_is_gone() -> None:
    runner = CannedRunner({"powershell": (HERE / "win11_qfe.csv").read_bytes()})
    keys = _win11_keys()
    keys = {k: v for k, v in keys.items() if "Component Based Servicing" not in k}
    doc = WindowsCollector(DictRegistry(keys), runner).collect()
    assert doc["updates"] == [
        {"kb": "KB5034123", "installed_on": "2024-01-10"},
        {"kb": "KB5035845", "installed_on": None},
        {"kb": "KB5027397", "installed_on": "2023-06-14"},
    ]
    assert runner.calls[0] == "wmic qfe" and runner.calls[1].startswith("powershell")
    assert len(runner.calls) == 2
    assert doc["pending_reboot"] is False  # no marker left: empty rename list does not count


@pytest.mark.parametrize(("product", "build", "kind", "expected"), [
    ("Windows 10 Enterprise LTSC 2024", "26100", "Client", "Windows 11 Enterprise LTSC 2024"),
    ("Windows 10 Pro", "19045", "Client", "Windows 10 Pro"),
    ("Windows Server 2022 Standard", "20348", "Server Core", "Windows Server 2022 Standard"),
    ("Windows Server 2025 Datacenter", "26100", "Server", "Windows Server 2025 Datacenter"),
])
def test_os_names(product: str, build: str, kind: str, expected: str) -> None:
    keys = {CV: {"ProductName": product, "CurrentBuild": build, "UBR": 1, "InstallationType": kind}}
    info = WindowsCollector(DictRegistry(keys), CannedRunner({})).os_info()
    assert (info["name"], info["build"], info["installation_type"]) == (expected, int(build), kind)


def test_windows_11_name_matches_what_systeminfo_says() -> None:
    """The 24H2 lab machine: its registry says "Windows 10 Enterprise LTSC" (Microsoft never
    changed ProductName), systeminfo says 11; the collector agrees with systeminfo."""
    info = parsers.parse_systeminfo(
        parsers.decode_output(_wesng("11_24H2_x64_enterprise_systeminfo.txt")))
    keys = {CV: {"ProductName": "Windows 10 Enterprise LTSC", "CurrentBuild": "26100",
                 "InstallationType": "Client"}}
    assert WindowsCollector(DictRegistry(keys), CannedRunner({})).os_info()["name"] == \
        info["os_name"]


def test_os_falls_back_to_systeminfo_without_the_registry() -> None:
    runner = CannedRunner({"systeminfo": _wesng("srv_2022_systeminfo.txt")})
    collector = WindowsCollector(DictRegistry({}), runner)
    info = collector.os_info()
    assert (info["name"], info["build"], info["arch"]) == ("Windows Server 2022 Standard", 20348,
                                                           "x64")
    assert collector.hostname() == "WIN-RIBN7SM07BK"
    # No wmic, no PowerShell: the (truncated) systeminfo hotfix list is better than nothing.
    assert [u["kb"] for u in collector.updates()] == ["KB5004330", "KB5005039", "KB5005552"]


def test_pending_reboot_markers() -> None:
    base = {CV: {"ProductName": "Windows 10 Pro", "CurrentBuild": "19045"}}
    session = r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\Session Manager"
    names = r"HKEY_LOCAL_MACHINE\SYSTEM\CurrentControlSet\Control\ComputerName"
    markers = [
        {r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate"
         r"\Auto Update\RebootRequired": {}},
        {session: {"PendingFileRenameOperations": [r"\??\C:\x.tmp", ""]}},
        {r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Updates": {"UpdateExeVolatile": 1}},
        {names + r"\ActiveComputerName": {"ComputerName": "OLD"},
         names + r"\ComputerName": {"ComputerName": "NEW"}},
    ]
    runner = CannedRunner({})
    assert WindowsCollector(DictRegistry(base), runner).pending_reboot() is False
    for marker in markers:
        assert WindowsCollector(DictRegistry({**base, **marker}), runner).pending_reboot(), marker


def test_parsers_edge_cases() -> None:
    assert parsers.unpack_guid("00002109F10090400000000000F01FEC") == \
        "{90120000-001F-0409-0000-0000000FF1CE}"
    assert parsers.unpack_guid("not-packed") is None
    assert parsers.kb_from_package("Package_for_RollupFix~31bf3856ad364e35~amd64~~1.1") is None
    assert parsers.parse_date("12/31/2023") == dt.date(2023, 12, 31)
    assert parsers.parse_date("24-05-2024, 03:20:28") == dt.date(2024, 5, 24)
    assert parsers.parse_date("0x01d9") is None
    assert parsers.decode_output(b"\xef\xbb\xbfA\r\nB") == "A\nB"
    assert parsers.decode_output("Größe".encode("cp1252")) == "Größe"
