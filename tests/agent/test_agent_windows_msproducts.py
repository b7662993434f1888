"""The Windows collector's Microsoft facts: Office MSP updates as installed KBs, the
.NET Framework release, Click-to-Run, SQL Server instances, Exchange, Defender, UBR unknown."""

from __future__ import annotations

import json
from typing import Any

from agent.platforms.windows.collector import WindowsCollector
from agent.platforms.windows.readers import CannedRunner, DictRegistry
from applicability.frames import make_frame
from applicability.msapps import map_inventory
from patchflow.fleet.inventory import validate_documents
from tests.support.paths import FIXTURES

HERE = FIXTURES / "agent"
HKLM = "HKEY_LOCAL_MACHINE"
UNINSTALL = HKLM + r"\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"
OFFICE_KEY = "{90160000-0011-0000-1000-0000000FF1CE}"


def _keys() -> dict[str, dict[str, Any]]:
    keys = dict(json.loads((HERE / "win11_registry.json").read_text())["keys"])
    keys.update({
        # Office 2016 MSI (64-bit) and one of its updates, as Office writes them.
        rf"{UNINSTALL}\{OFFICE_KEY}": {
            "DisplayName": "Microsoft Office Professional Plus 2016",
            "DisplayVersion": "16.0.4266.1001", "Publisher": "Microsoft Corporation"},
        rf"{UNINSTALL}\{OFFICE_KEY}_Office16.PROPLUS_{{A1B2}}": {
            "DisplayName": "Security Update for Microsoft Office 2016 (KB5002635) 64-Bit Edition",
            "ParentKeyName": "Office16.PROPLUS", "Publisher": "Microsoft",
            "InstallDate": "20241015"},
        HKLM + r"\SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full": {"Release": 533325},
        HKLM + r"\SOFTWARE\Microsoft\Office\ClickToRun\Configuration": {
            "VersionToReport": "16.0.17928.20114", "ProductReleaseIds": "O365ProPlusRetail",
            "CDNBaseUrl": "http://officecdn.microsoft.com/pr/492350f6-3a01-4f97-b9c0-c7c6ddf67d60"},
        HKLM + r"\SOFTWARE\Microsoft\Microsoft SQL Server\Instance Names\SQL": {
            "MSSQLSERVER": "MSSQL16.MSSQLSERVER"},
        HKLM + r"\SOFTWARE\Microsoft\Microsoft SQL Server\MSSQL16.MSSQLSERVER\Setup": {
            "PatchLevel": "16.0.4140.3"},
        HKLM + r"\SOFTWARE\Microsoft\ExchangeServer\v15\Setup": {
            "MsiProductMajor": 15, "MsiProductMinor": 2, "MsiBuildMajor": 1544,
            "MsiBuildMinor": 9},
        HKLM + r"\SOFTWARE\Microsoft\Windows Defender\Signature Updates": {
            "EngineVersion": "1.1.24090.11"},
    })
    return keys


def test_collector_reports_microsoft_facts_and_office_update_kbs() -> None:
    collector = WindowsCollector(DictRegistry(_keys()), CannedRunner({}))
    doc = collector.collect()
    parsed = validate_documents(doc)[0]
    assert "KB5002635" in {u["kb"] for u in doc["updates"]}  # Office's MSP update entry
    assert "Security Update for Microsoft Office 2016 (KB5002635) 64-Bit Edition" not in {
        p["name"] for p in doc["programs"]}  # an update of another product, not a program
    assert doc["ms_facts"] == [
        {"kind": "dotnet_framework", "name": ".NET Framework 4.x", "version": "533325",
         "detail": None},
        {"kind": "click_to_run", "name": "O365ProPlusRetail", "version": "16.0.17928.20114",
         "detail": "Current"},
        {"kind": "sql_server", "name": "MSSQLSERVER", "version": "16.0.4140.3", "detail": None},
        {"kind": "exchange", "name": "Exchange Server", "version": "15.2.1544.9",
         "detail": None},
        {"kind": "defender_engine", "name": "Microsoft Defender", "version": "1.1.24090.11",
         "detail": None},
    ]
    assert len(parsed.ms_facts) == 5
    programs = make_frame("programs", [{"endpoint_id": 1, **p} for p in doc["programs"]])
    facts = make_frame("ms_facts", [{"endpoint_id": 1, **f} for f in doc["ms_facts"]])
    os_product = "Windows 11 Version 23H2 for x64-based Systems"
    mapped = set(map_inventory(programs, facts, {1: os_product})["product"])
    assert {
        "Microsoft Office 2016 (64-bit edition)",
        "Microsoft SQL Server 2022 for x64-based Systems (CU 14)",
        "Microsoft Exchange Server 2019 Cumulative Update 14",
        "Microsoft .NET Framework 3.5 AND 4.8.1 on Windows 11 Version 23H2 for x64-based Systems",
        "Microsoft Malware Protection Engine",
    } <= mapped


def test_ubr_unknown_is_reported_as_unknown_not_zero() -> None:
    keys = _keys()
    cv = HKLM + r"\SOFTWARE\Microsoft\Windows NT\CurrentVersion"
    keys[cv] = {k: v for k, v in keys[cv].items() if k != "UBR"}
    doc = WindowsCollector(DictRegistry(keys), CannedRunner({})).collect()
    assert doc["os"]["ubr"] is None
    assert validate_documents(doc)[0].os.ubr is None
    # A document without the field at all (hand-written, older agents) is unknown too.
    del doc["os"]["ubr"]
    assert validate_documents(doc)[0].os.ubr is None
