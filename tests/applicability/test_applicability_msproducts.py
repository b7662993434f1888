"""Microsoft products beyond the OS: Office, .NET, Edge, SQL Server, Exchange...

The mapping runs on real Uninstall names; the rules on a small hand-written catalog whose KBs,
builds and product names are MSRC's own (2024), then on the twelve real 2024 documents and the
real Uninstall listing from ../shared/fixtures (skipped when that folder is absent). The
vectorised engine and the reference loop must agree on random fleets carrying these products.
"""

from __future__ import annotations

import gzip
import random
from typing import Any

import pandas as pd
import pytest

from applicability import build_frames, explain, scan
from applicability.catalog import ms_catalog_from_records
from applicability.msproducts import (
    C2R,
    CUMULATIVE,
    PER_KB,
    UNKNOWN,
    kbs_in_name,
    map_fact,
    map_program,
    windows_installable,
)
from applicability.reference import scan_reference
from tests.applicability.test_applicability_ms import CHAIN, W11, ep, kb, srv
from tests.support.paths import SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES
MS = "Microsoft Corporation"
O16 = "Microsoft Office 2016 (64-bit edition)"
W16 = "Microsoft Word 2016 (64-bit edition)"
NET8 = ".NET 8.0 installed on Windows"
EDGE = "Microsoft Edge (Chromium-based)"
SQL_GDR = "Microsoft SQL Server 2022 for x64-based Systems (GDR)"
SQL_CU15 = "Microsoft SQL Server 2022 for x64-based Systems (CU 15)"
EX_CU13 = "Microsoft Exchange Server 2019 Cumulative Update 13"
NDP = "Microsoft .NET Framework 3.5 AND 4.8.1 on Windows 11 Version 23H2 for x64-based Systems"


def row(pid: int, number: str | None, fixed: str, product: str, sup: str | None = None) -> dict:
    return kb(pid, number, fixed, sup, product=product)  # type: ignore[arg-type]


# Real 2024 rows (December Office, October .NET 8, December Edge, November SQL/Exchange).
CATALOG = [
    *CHAIN,
    row(101, "KB5002661", "16.0.5478.1000", O16, "KB5002642"),
    row(101, "KB5002661", "16.0.5478.1000", W16, "KB5002642"),
    row(102, "KB4475587", "16.0.5478.1004", O16),
    row(103, "KB2920716", "16.0.5478.1004", O16),
    row(104, "KB5002642", "16.0.5474.1000", O16),
    row(111, "KB5042132", "8.0.8", NET8),
    row(112, "KB5045993", "8.0.10", NET8),
    row(113, "KB5045993", "8.0.10", ".NET 8.0 installed on Linux"),
    row(121, None, "131.0.2903.86", EDGE),
    row(122, None, "131.0.2903.112", EDGE),
    row(131, "KB5046057", "16.0.1130.5", SQL_GDR),
    row(132, "KB5046861", "16.0.1135.2", SQL_GDR, "KB5046057"),
    row(133, "KB5046862", "16.0.4155.4", SQL_CU15, "KB5046059"),
    row(141, "KB5035606", "15.2.1544.004", EX_CU13),  # MSRC quotes CU14's build on CU13
    row(142, "KB5049233", "15.02.1258.039", EX_CU13, "KB5037224"),
    row(151, "KB5033920", "4.8.09214.01", NDP),
    row(152, "KB5039895", "4.8.1.9256.03", NDP),  # newer, though its FixedBuild sorts lower
]
OFFICE = {"name": "Microsoft Office Professional Plus 2016", "version": "16.0.4266.1001",
          "publisher": MS, "arch": "x64"}


def prog(eid: int, name: str, version: str | None = None, arch: str = "x64") -> dict[str, Any]:
    return {"endpoint_id": eid, "name": name, "version": version, "publisher": MS, "arch": arch}


def frames(programs: list[dict], facts: list[dict] = (), catalog: list[dict] = CATALOG,
           endpoints: list[dict] | None = None, kbs: list[dict] = ()):  # type: ignore[assignment]
    eps = endpoints or [ep(1, 4460)]
    ids = sorted({r["patch_id"] for r in catalog})
    return build_frames(
        endpoints=eps, programs=programs, ms_facts=list(facts), ms_catalog=catalog,
        installed_kbs=list(kbs),
        availability=[{"endpoint_id": e["endpoint_id"], "server_id": 1} for e in eps],
        server_patches=[{"server_id": 1, "patch_id": p} for p in ids],
    )


def found(f) -> dict[int, tuple[str, str | None, str | None, str]]:  # type: ignore[no-untyped-def]
    result = scan(f)
    ref = scan_reference(f)
    pd.testing.assert_frame_equal(result.missing, ref[0])
    pd.testing.assert_frame_equal(result.unmapped, ref[2])
    return {
        int(r.patch_id): (r.product, r.installed_version, r.available_version, r.reason)
        for r in result.missing.itertuples()
    }


# ---- mapping ---------------------------------------------------------------------------------


def test_real_uninstall_names_map_to_msrc_products() -> None:
    office = map_program(OFFICE["name"], OFFICE["version"], MS, "x64")
    assert [m.product for m in office] == [
        O16, W16, "Microsoft Excel 2016 (64-bit edition)",
        "Microsoft PowerPoint 2016 (64-bit edition)", "Microsoft Outlook 2016 (64-bit edition)",
        "Microsoft Access 2016 (64-bit edition)", "Microsoft Publisher 2016 (64-bit edition)",
        "Skype for Business 2016 (64-bit)",
    ]
    assert {m.kind for m in office} == {PER_KB} and office[0].compare is None
    x86 = map_program("Microsoft Office Standard 2016", "16.0.4266.1001", MS, "x86")
    assert x86[0].product == "Microsoft Office 2016 (32-bit edition)" and len(x86) == 5
    net = map_program("Microsoft .NET Runtime - 8.0.8 (x64)", "8.0.8.24366", MS, "x64")
    assert [(m.product, m.compare, m.kind) for m in net] == [
        (NET8, "8.0.8", CUMULATIVE), (".NET 8.0", "8.0.8", CUMULATIVE)]
    asp = map_program("Microsoft ASP.NET Core 8.0.8 - Shared Framework (x64)", "8.0.8", MS, "x64")
    assert [m.product for m in asp] == ["ASP.NET Core 8.0"]
    edge = map_program("Microsoft Edge", "129.0.2792.65", MS, "x86")
    assert [(m.product, m.compare) for m in edge] == [(EDGE, "129.0.2792.65")]
    assert map_program("Microsoft Edge Update", "1.3.143.57", MS, "x86") == []
    assert map_program("Microsoft Edge", "129.0", "Evil Corp", "x86") == []
    c2r = map_program("Microsoft 365 Apps for enterprise - en-us", "16.0.17928.20114", MS, "x64")
    assert c2r[0].kind == C2R and "cannot be judged" in c2r[0].note
    c2r16 = map_program("Microsoft Office Professional Plus 2016 - en-us", "16.0.17928.20114",
                        MS, "x64")
    assert c2r16[0].kind == C2R
    sql = map_program("Microsoft SQL Server 2022 (64-bit)", None, MS, "x64")
    assert sql[0].kind == UNKNOWN and "instances" in sql[0].note
    vs = map_program("Visual Studio Professional 2022", "17.10.35013.160", MS, "x86")
    assert vs[0].kind == UNKNOWN  # DisplayVersion is an internal build, not the release
    assert map_program("Remote Desktop", "1.2.5560.0", MS, "x64")[0].product == (
        "Remote Desktop client for Windows Desktop")
    assert map_program("Microsoft Visual C++ 2015-2019 Redistributable (x64) - 14.28.29334",
                       "14.28.29334.0", MS, "x64") == []


def test_office_update_entries_name_installed_kbs() -> None:
    assert kbs_in_name("Security Update for Microsoft Office 2016 (KB5002635) 64-Bit Edition") == [
        "KB5002635"]
    assert kbs_in_name("Update for Microsoft Word 2016 (KB5002619) 32-Bit Edition") == ["KB5002619"]
    assert kbs_in_name("Some Tool (KB5002635)") == []  # only update entries count


def test_agent_facts_map_to_msrc_products() -> None:
    assert [m.product for m in map_fact("sql_server", "MSSQLSERVER", "16.0.1130.5", "GDR", None)
            ] == [SQL_GDR]
    assert [m.product for m in map_fact("sql_server", "X", "16.0.4150.1", "CU15", None)] == [
        SQL_CU15]
    # Without the agent saying, the line comes from the build (16.0.4150.1 is CU 15 + GDR)...
    assert map_fact("sql_server", "X", "16.0.4150.1", None, None)[0].product == SQL_CU15
    assert map_fact("sql_server", "X", "16.0.1110.1", "", None)[0].product == SQL_GDR
    # ...and a CU build older than the table is said to be unjudgeable, not guessed.
    assert map_fact("sql_server", "X", "16.0.4003.1", None, None)[0].kind == UNKNOWN
    assert map_fact("sql_server", "X", "13.0.6441.1", "GDR", None)[0].product == (
        "Microsoft SQL Server 2016 for x64-based Systems Service Pack 3 (GDR)")
    assert map_fact("exchange", None, "15.2.1258.32", None, None)[0].product == EX_CU13
    assert map_fact("dotnet_framework", None, "533325", None, W11)[0].product == NDP
    assert map_fact("dotnet_framework", None, "533325", None, None) == []
    assert map_fact("visual_studio", "VS", "17.10.4", None, None)[0].product == (
        "Microsoft Visual Studio 2022 version 17.10")
    assert map_fact("click_to_run", "O365ProPlusRetail", "16.0.17928.20114", "Current",
                    None)[0].kind == C2R
    assert map_fact("defender_engine", None, "1.1.24090.11", None, None)[0].product == (
        "Microsoft Malware Protection Engine")


def test_products_that_cannot_be_installed_on_windows() -> None:
    for name in (".NET 8.0 installed on Linux", ".NET 8.0 installed on Mac OS",
                 "Microsoft Edge for Android", "Microsoft Office LTSC for Mac 2021",
                 "Azure Linux 3.0 x64", "Microsoft Edge for iOS"):
        assert not windows_installable(name), name
    for name in (NET8, EDGE, "Microsoft Visual Studio 2022 version 17.10", SQL_GDR):
        assert windows_installable(name), name


# ---- rules -----------------------------------------------------------------------------------


def test_office_msi_updates_are_per_component_and_all_needed() -> None:
    got = found(frames([prog(1, **{k: v for k, v in OFFICE.items() if k != "publisher"})]))
    assert sorted(got) == [101, 102, 103]  # KB5002642 is superseded by KB5002661
    product, installed, available, reason = got[101]
    assert (product, installed, available) == (O16, "16.0.4266.1001", "16.0.5478.1000")
    assert reason == (
        f"{O16}: per-component update KB5002661 not installed, nor a KB superseding it "
        "(not cumulative; installed 16.0.4266.1001 does not move with updates); "
        "supersedes KB5002642")
    # The agent reports Office's own update entry: that KB is installed, the others still due.
    done = prog(1, "Security Update for Microsoft Office 2016 (KB5002661) 64-Bit Edition")
    got = found(frames([prog(1, **{k: v for k, v in OFFICE.items() if k != "publisher"}), done]))
    assert sorted(got) == [102, 103]


def test_dotnet_edge_sql_exchange_are_cumulative_per_product() -> None:
    programs = [
        prog(1, "Microsoft .NET Runtime - 8.0.8 (x64)", "8.0.8.24366"),
        prog(1, "Microsoft Windows Desktop Runtime - 8.0.4 (x64)", "8.0.4.0"),
        prog(1, "Microsoft Edge", "129.0.2792.65", "x86"),
    ]
    facts = [
        {"endpoint_id": 1, "kind": "sql_server", "name": "MSSQLSERVER", "version": "16.0.1110.1",
         "detail": "GDR"},
        {"endpoint_id": 1, "kind": "exchange", "version": "15.2.1258.32"},
        {"endpoint_id": 1, "kind": "dotnet_framework", "version": "533325"},
    ]
    got = found(frames(programs, facts))
    assert sorted(got) == [112, 122, 132, 142, 152]
    assert got[112] == (NET8, "8.0.8", "8.0.10", f"{NET8}: 8.0.8 < fixed 8.0.10; KB5045993 not "
                        "installed")
    assert got[122] == (EDGE, "129.0.2792.65", "131.0.2903.112",
                        f"{EDGE}: 129.0.2792.65 < fixed 131.0.2903.112; version-only fix (no KB)")
    assert got[132][0] == SQL_GDR and got[132][3].startswith(f"{SQL_GDR}: 16.0.1110.1 < fixed")
    # The CU13 row quoting CU14's build is set aside; the CU13 build is compared with its own.
    assert got[142][2] == "15.02.1258.039"
    assert got[152][3] == (f"{NDP} 4.8.1: KB5039895 not installed, nor a KB superseding it or "
                           "a newer update of this product")
    up = [prog(1, "Microsoft .NET Runtime - 8.0.10 (x64)", "8.0.10.0"),
          prog(1, "Microsoft Edge", "131.0.2903.112", "x86")]
    facts[0]["version"] = "16.0.1135.2"
    facts[1]["version"] = "15.2.1258.39"
    got = found(frames(up, facts, kbs=[{"endpoint_id": 1, "kb": "KB5039895"}]))
    assert got == {}


def test_click_to_run_is_never_silently_up_to_date() -> None:
    f = frames([prog(1, "Microsoft 365 Apps for enterprise - en-us", "16.0.17928.20114")],
               endpoints=[ep(1, 4460)], catalog=CHAIN[:3])
    result = scan(f)
    assert result.missing.empty
    assert result.unmapped["reason"].tolist() == [
        "Microsoft 365 Apps for enterprise - en-us 16.0.17928.20114 is Click-to-Run: MSRC "
        "publishes no build for it, so this endpoint's build cannot be judged from MSRC alone "
        "(see https://aka.ms/OfficeSecurityReleases)"]


def test_explain_an_office_patch() -> None:
    f = frames([prog(1, **{k: v for k, v in OFFICE.items() if k != "publisher"})])
    lines = explain(f, 1, 104)
    assert any("KB5002642 is superseded by available KB5002661" in line for line in lines)
    assert lines[-1] == "verdict: not missing"
    lines = explain(f, 1, 101)
    assert lines[-1].startswith(f"MISSING: {O16}: per-component update KB5002661")


# ---- Windows findings ------------------------------------------------------------------------

S22_REG = "Security Update"
S22_ALONE = "Standalone Security Update"


def test_standalone_hotpatch_kb_tie_goes_by_subtype() -> None:
    """October 2025 shape: two KBs fix Server 2022 at one FixedBuild; the out-of-band standalone
    package is for hotpatch-enrolled servers, the regular one for the others."""
    cat = [
        kb(1, "KB5066782", "10.0.20348.4294", "KB5065432", "Windows Server 2022", S22_REG),
        kb(2, "KB5070884", "10.0.20348.4294", "KB5065432", "Windows Server 2022", S22_ALONE),
    ]
    f = frames([], catalog=cat, endpoints=[srv(1, 4171), srv(2, 4171, hotpatch=True)])
    got = scan(f).missing
    pd.testing.assert_frame_equal(got, scan_reference(f)[0])
    assert dict(zip(got["endpoint_id"], got["patch_id"], strict=True)) == {1: 1, 2: 2}
    lines = explain(f, 1, 1)
    assert any("ties with KB5070884" in line and "standalone" in line for line in lines)


def test_sibling_release_row_says_it_compares_by_ubr() -> None:
    arm = "Windows 11 Version 23H2 for ARM64-based Systems"
    cat = [kb(1, "KB5040442", "10.0.22621.3880", "KB5039212", date="2024-07-09"),
           kb(1, "KB5040442", "10.0.22631.3880", "KB5039212", arm, date="2024-07-09")]
    got = found(frames([], catalog=cat, endpoints=[ep(1, 3737)]))
    assert got[1][3] == (
        "build 22631.3737 < fixed 22621.3880; 22621 and 22631 share a servicing branch: "
        "compared by UBR; KB5040442 not installed; supersedes KB5039212")
    # The sibling's build alone is not relied on: UBR 3880 does not make the KB installed.
    got = found(frames([], catalog=cat[:1], endpoints=[ep(1, 3880)]))
    assert pd.isna(got[1][2])
    assert got[1][3:] == ((
        "fixed build 22621.3880 is for 22621, which shares a servicing branch with 22631, and "
        "no row of KB5040442 quotes build 22631: KB rule; KB5040442 not installed, nor a KB "
        "superseding it; supersedes KB5039212"),)
    assert found(frames([], catalog=cat[:1], endpoints=[ep(1, 3880)],
                        kbs=[{"endpoint_id": 1, "kb": "KB5040442"}])) == {}


def test_explain_lists_candidates_set_aside_for_a_missing_verdict() -> None:
    lines = explain(frames([], catalog=CHAIN, endpoints=[ep(1, 4000)]), 1, 3)
    assert lines[-1].startswith("MISSING:")
    assert any(line.startswith("set aside: KB5044285 is superseded") for line in lines)


# ---- equivalence and real data ---------------------------------------------------------------

NAMES = [
    (OFFICE["name"], "16.0.4266.1001"),
    ("Microsoft Office Standard 2016", "16.0.4266.1001"),
    ("Microsoft .NET Runtime - 8.0.8 (x64)", "8.0.8.24366"),
    ("Microsoft .NET Runtime - 8.0.10 (x64)", "8.0.10.0"),
    ("Microsoft Windows Desktop Runtime - 8.0.4 (x64)", "8.0.4.0"),
    ("Microsoft Edge", "129.0.2792.65"),
    ("Microsoft Edge", "131.0.2903.86"),
    ("Microsoft Edge", "131.0.2903.112"),
    ("Microsoft 365 Apps for enterprise - en-us", "16.0.17928.20114"),
    ("Security Update for Microsoft Office 2016 (KB5002661) 64-Bit Edition", None),
    ("Security Update for Microsoft Office 2016 (KB4475587) 64-Bit Edition", None),
    ("Microsoft SQL Server 2022 (64-bit)", None),
    ("Remote Desktop", "1.2.5105.0"),
]
FACTS = [
    ("sql_server", "A", "16.0.1110.1", "GDR"), ("sql_server", "B", "16.0.4150.1", "CU 15"),
    ("exchange", None, "15.2.1258.32", None), ("exchange", None, "15.2.1258.39", None),
    ("dotnet_framework", None, "533325", None), ("dotnet_framework", None, "528040", None),
]


def random_fleet(catalog: list[dict] | pd.DataFrame, seed: int, n: int = 120):  # type: ignore[no-untyped-def]
    rnd = random.Random(seed)
    eps, programs, facts, kbs = [], [], [], []
    for eid in range(1, n + 1):
        eps.append(ep(eid, rnd.choice([None, 4000, 4460])) if rnd.random() < 0.8
                   else srv(eid, rnd.choice([2461, 2527]), hotpatch=rnd.random() < 0.5))
        for name, version in rnd.sample(NAMES, rnd.randint(0, 6)):
            programs.append(prog(eid, name, version, rnd.choice(["x64", "x86", None])))
        for kind, name, version, detail in rnd.sample(FACTS, rnd.randint(0, 3)):
            facts.append({"endpoint_id": eid, "kind": kind, "name": name, "version": version,
                          "detail": detail})
        for number in rnd.sample(["KB5002661", "KB5045993", "KB5046057", "KB5033920",
                                  "KB5044285"], rnd.randint(0, 2)):
            kbs.append({"endpoint_id": eid, "kb": number})
    ms = catalog if isinstance(catalog, pd.DataFrame) else pd.DataFrame(catalog)
    ids = sorted(set(ms["patch_id"]))
    return build_frames(
        endpoints=eps, programs=programs, ms_facts=facts, installed_kbs=kbs, ms_catalog=ms,
        availability=[{"endpoint_id": e["endpoint_id"], "server_id": 1 + e["endpoint_id"] % 2}
                      for e in eps],
        server_patches=[{"server_id": s, "patch_id": p} for s in (1, 2) for p in ids
                        if s == 1 or p % 3],
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_scan_equals_reference_with_microsoft_products(seed: int) -> None:
    f = random_fleet(CATALOG, seed)
    result = scan(f)
    missing, _, unmapped = scan_reference(f)
    pd.testing.assert_frame_equal(result.missing, missing)
    pd.testing.assert_frame_equal(result.unmapped, unmapped)
    assert result.missing["product"].str.contains("Office|NET|Edge|SQL|Exchange").sum() > 50


@pytest.fixture(scope="module")
def year_2024() -> pd.DataFrame:
    from sources.msrc import parse_cvrf

    folder = FIXTURES / "msrc"
    if not folder.exists():
        pytest.skip(f"real upstream fixtures not found at {folder} (../shared is absent)")
    docs = sorted(folder.glob("2024-*.xml.gz"))
    return ms_catalog_from_records(
        [p for d in docs for p in parse_cvrf(gzip.decompress(d.read_bytes())).patches])


def test_real_2024_year_office_dotnet_edge(year_2024: pd.DataFrame) -> None:
    programs = [
        prog(1, **{k: v for k, v in OFFICE.items() if k != "publisher"}),
        prog(1, "Microsoft .NET Runtime - 8.0.8 (x64)", "8.0.8.24366"),
        prog(1, "Microsoft Edge", "129.0.2792.65", "x86"),
    ]
    f = frames(programs, catalog=year_2024.to_dict("records"), endpoints=[ep(1, 4460)])
    got = scan(f).missing
    pd.testing.assert_frame_equal(got, scan_reference(f)[0])
    kb_of = dict(zip(year_2024["patch_id"], year_2024["kb"], strict=True))
    office = {kb_of[p] for p, prod in zip(got["patch_id"], got["product"], strict=True)
              if prod == O16}
    assert {"KB5002661", "KB4475587", "KB2920716"} <= office  # December 2024: all three needed
    by_product = {r.product: r for r in got.itertuples()}
    net = by_product[NET8]
    assert (kb_of[net.patch_id], net.available_version) == ("KB5045993", "8.0.10")
    edge = by_product[EDGE]
    assert pd.isna(kb_of[edge.patch_id]) and edge.available_version == "131.0.2903.112"
    assert not got["product"].str.contains("Linux|Mac|Android|Azure").any()


def test_real_2024_year_random_fleet_equivalence(year_2024: pd.DataFrame) -> None:
    f = random_fleet(year_2024, 7, n=60)
    result = scan(f)
    missing, _, unmapped = scan_reference(f)
    pd.testing.assert_frame_equal(result.missing, missing)
    pd.testing.assert_frame_equal(result.unmapped, unmapped)
