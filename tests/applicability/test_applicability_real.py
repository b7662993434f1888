"""The scan engine on real data: the 2024 MSRC year, the winget manifests and real inventories
(lab machines' systeminfo / wmic qfe, a real Uninstall-key listing) from ../shared/fixtures.

Skipped with the reason when ../shared/fixtures is absent (a fresh clone without it).
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from applicability import ScanFrames, build_frames, explain, scan
from applicability.catalog import app_catalog_from_records, ms_catalog_from_records
from applicability.reference import scan_reference
from applicability.synthetic import synthetic_fleet
from applicability.winparse import decode_text, parse_systeminfo, parse_wmic_qfe
from tests.support.paths import SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES
INVENTORY = FIXTURES / "inventory"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real upstream fixtures not found at {path} (../shared is absent)")
    return path


@pytest.fixture(scope="module")
def ms_catalog() -> pd.DataFrame:
    from sources.msrc import parse_cvrf

    docs = sorted(_need(FIXTURES / "msrc").glob("2024-*.xml.gz"))
    assert len(docs) == 12
    records = [p for d in docs for p in parse_cvrf(gzip.decompress(d.read_bytes())).patches]
    return ms_catalog_from_records(records)


@pytest.fixture(scope="module")
def app_catalog() -> pd.DataFrame:
    from sources.winget import DEFAULT_PACKAGES, find_package_dirs, parse_package_dir

    dirs = find_package_dirs(_need(FIXTURES / "winget" / "manifests"), DEFAULT_PACKAGES)
    records = [p for d in dirs.values() for p in parse_package_dir(d).patches]
    return app_catalog_from_records(records, first_id=100_000)


def _all_available(f: dict, ms: pd.DataFrame, apps: pd.DataFrame) -> ScanFrames:
    eids = [e["endpoint_id"] for e in f["endpoints"]]
    ids = pd.concat([ms["patch_id"], apps["patch_id"]]).unique()
    return build_frames(
        **f,
        ms_catalog=ms,
        app_catalog=apps,
        availability=[{"endpoint_id": e, "server_id": 1} for e in eids],
        server_patches=pd.DataFrame({"server_id": 1, "patch_id": ids}),
    )


def _lab_machines() -> dict[str, list[dict]]:
    """Endpoints and installed KBs from the real systeminfo + wmic qfe captures."""
    folder = _need(INVENTORY / "wesng-validation")
    endpoints, kbs = [], []
    for eid, path in enumerate(sorted(folder.glob("*_systeminfo.txt")), 1):
        info = parse_systeminfo(decode_text(path.read_bytes()))
        endpoints.append(
            {
                "endpoint_id": eid,
                "hostname": info.hostname,
                "os_name": info.os_name,
                "build": info.build,
                "ubr": None,
                "arch": info.arch,
                "installation_type": info.installation_type,
            }
        )
        qfe = path.with_name(path.name.replace("_systeminfo", "_qfe"))
        found = parse_wmic_qfe(decode_text(qfe.read_bytes())) if qfe.exists() else []
        kbs += [{"endpoint_id": eid, "kb": k} for k in dict.fromkeys([*info.hotfixes, *found])]
    return {"endpoints": endpoints, "installed_kbs": kbs}


def test_lab_machines_get_one_cumulative_each(
    ms_catalog: pd.DataFrame, app_catalog: pd.DataFrame
) -> None:
    f = _all_available(_lab_machines(), ms_catalog, app_catalog)
    result = scan(f)
    hosts = dict(zip(f.endpoints["endpoint_id"], f.endpoints["hostname"], strict=True))
    got = {(hosts[r.endpoint_id], r.product): r.reason for r in result.missing.itertuples()}
    kb_of = dict(zip(ms_catalog["patch_id"], ms_catalog["kb"], strict=False))
    kbs = {hosts[r.endpoint_id]: kb_of[r.patch_id] for r in result.missing.itertuples()}
    # UBR is unknown from systeminfo: KB rule; the newest cumulative in the 2024 documents
    # (MSRC revised CVEs up to late 2025) is reported once per machine.
    assert kbs == {
        "DESKTOP-LOQ9L09": "KB5066586",
        "WINXI24H2LTSC": "KB5066835",
        "WIN-RIBN7SM07BK": "KB5066782",
    }
    assert got[("DESKTOP-LOQ9L09", "Windows 10 Version 1809 for x64-based Systems")] == (
        "build 17763 (UBR unknown), fixed 17763.7919: KB rule; KB5066586 not installed, "
        "nor a KB superseding it; supersedes KB5065428"
    )
    assert result.unmapped["reason"].tolist() == [
        "no catalog rows for Windows 7 for x64-based Systems Service Pack 1"
    ]


def _w11(ubr: int | None, kbs: list[str]) -> dict[str, list[dict]]:
    return {
        "endpoints": [
            {
                "endpoint_id": 1,
                "hostname": "w11",
                "os_name": "Windows 11 Enterprise",
                "display_version": "23H2",
                "build": 22631,
                "ubr": ubr,
                "arch": "x64",
                "installation_type": "Client",
            }
        ],
        "installed_kbs": [{"endpoint_id": 1, "kb": k} for k in kbs],
    }


@pytest.mark.parametrize(
    ("ubr", "kbs", "expected"),
    [
        (4460, [], "KB5066793"),  # November 2024 build: only the newest is listed
        (6060, [], None),  # at the newest FixedBuild
        (None, ["KB5066793"], None),  # UBR unknown, newest installed
        (None, ["KB5046633"], "KB5066793"),  # an older cumulative does not satisfy a newer one
    ],
)
def test_windows_11_23h2_against_the_2024_year(
    ms_catalog: pd.DataFrame,
    app_catalog: pd.DataFrame,
    ubr: int | None,
    kbs: list[str],
    expected: str | None,
) -> None:
    result = scan(_all_available(_w11(ubr, kbs), ms_catalog, app_catalog))
    kb_of = dict(zip(ms_catalog["patch_id"], ms_catalog["kb"], strict=False))
    assert [kb_of[p] for p in result.missing["patch_id"]] == ([expected] if expected else [])


def test_superseded_kb_is_never_reported_when_its_successor_is_installed(
    ms_catalog: pd.DataFrame, app_catalog: pd.DataFrame
) -> None:
    # A server approving only up to November 2024: KB5046633 is the candidate there.
    f = _all_available(_w11(None, ["KB5046633"]), ms_catalog, app_catalog)
    nums = ms_catalog["kb"].str.slice(2).astype(float)  # NaN: version-only fixes (Edge)
    f.server_patches = f.server_patches[
        f.server_patches["patch_id"].isin(ms_catalog.loc[nums <= 5046633, "patch_id"])
    ]
    assert scan(f).missing.empty
    f.installed_kbs = f.installed_kbs.assign(kb="KB5044285")
    result = scan(f)
    assert result.missing["reason"].tolist() == [
        "build 22631 (UBR unknown), fixed 22631.4460: KB rule; KB5046633 not installed, nor a KB "
        "superseding it; supersedes KB5044285"
    ]
    kb5044285 = int(ms_catalog.loc[ms_catalog["kb"] == "KB5044285", "patch_id"].iloc[0])
    assert explain(f, 1, kb5044285)[-1] == "verdict: not missing"


def _uninstall_listing() -> list[dict]:
    """Rows of the real `Get-ItemProperty ... | Format-Table` listing (fixed-width columns)."""
    text = (
        _need(INVENTORY / "uninstall-registry")
        .joinpath("bgoonz_wow6432node_uninstall_get-itemproperty.txt")
        .read_text()
    )
    lines = text.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.startswith("DisplayName"))
    cols = [lines[head].index(c) for c in ("DisplayVersion", "Publisher", "InstallDat")]
    rows = []
    for ln in lines[head + 3 :]:
        if ln.startswith("PS ") or ln.startswith("```"):
            break
        if not ln.strip():
            continue
        name, version, publisher = (
            ln[: cols[0]].strip(),
            ln[cols[0] : cols[1]].strip(),
            ln[cols[1] : cols[2]].strip(),
        )
        rows.append(
            {
                "endpoint_id": 1,
                "name": name or None,
                "version": version or None,
                "publisher": publisher or None,
                "arch": "x86",
            }
        )
    return rows


def test_real_uninstall_listing_and_real_catalog_names(
    ms_catalog: pd.DataFrame, app_catalog: pd.DataFrame
) -> None:
    listing = _uninstall_listing()
    assert len(listing) == 33  # keys without a DisplayName have no row
    # None of these programs is in the catalog ("Java Auto Updater" is not Java 8)...
    installed = [
        *listing,
        # ...and these are, as real installs show them (names and codes from the manifests).
        {
            "endpoint_id": 1,
            "name": "7-Zip 19.00 (x64 edition)",
            "version": "19.00",
            "publisher": "Igor Pavlov",
            "product_code": "{23170F69-40C1-2702-1900-000001000000}",
            "arch": "x64",
        },
        {
            "endpoint_id": 1,
            "name": "PuTTY release 0.81 (64-bit)",
            "version": "0.81.0.0",
            "publisher": "Simon Tatham",
            "upgrade_code": "{C9EAA861-2B72-4FAF-9FEE-EEB1AD5FD15E}",
            "arch": "x64",
        },
        {
            "endpoint_id": 1,
            "name": "VLC media player",
            "version": "3.0.20.0",
            "publisher": "VideoLAN",
            "product_code": "{9675011C-2395-4AD7-B1CC-92910F991F58}",
            "arch": "x64",
        },
        {
            "endpoint_id": 1,
            "name": "Java 8 Update 381 (64-bit)",
            "version": "8.0.4010.10",
            "publisher": "Oracle Corporation",
            "arch": "x64",
        },
        {
            "endpoint_id": 1,
            "name": "Mozilla Firefox (x64 en-US)",
            "version": "100.0",
            "publisher": "Mozilla",
            "arch": "x64",
        },
        # Firefox's companion entry is not Firefox: no match, no report.
        {
            "endpoint_id": 1,
            "name": "Mozilla Maintenance Service",
            "version": "99.0",
            "publisher": "Mozilla",
            "product_code": "MozillaMaintenanceService",
            "arch": "x86",
        },
    ]
    f = _all_available(_w11(6060, []) | {"programs": installed}, ms_catalog, app_catalog)
    result = scan(f)
    assert result.missing["reason"].tolist() == [
        # The listing's real "Microsoft Edge" 90.0.818.66 against MSRC's newest 2024 Edge fix
        # (a version-only "Release Notes" fix: no KB); "Microsoft Edge Update" is not Edge.
        "Microsoft Edge (Chromium-based): 90.0.818.66 < fixed 131.0.2903.112; "
        "version-only fix (no KB)",
        "VLC media player 3.0.20.0 (x64) < 3.0.24",
        "PuTTY 0.81.0.0 (x64) < 0.85.0.0",
        "Java 8 8.0.4010.10 (x64) < 8.0.5030.1",
        "7-Zip 19.00 (x64) < 26.03",
        "Mozilla Firefox 100.0 (x64) < 140.0",
    ]
    assert result.ambiguous.empty
    # VLC's MSI reports 3.0.20.0 for package 3.0.20: equal, so not missing when 3.0.24 is absent.
    vlc_3024 = app_catalog.loc[app_catalog["version"] == "3.0.24", "patch_id"].iloc[0]
    f.server_patches = f.server_patches[f.server_patches["patch_id"] != vlc_3024]
    assert "VLC" not in " ".join(scan(f).missing["reason"])


@pytest.mark.parametrize(
    ("newest", "expected"),
    [
        ("2.30.0", []),
        ("2.31", ["ScreenToGif 2.30.0 (x86) < 2.31 (also installed: 2.27.3)"]),
    ],
)
def test_real_listing_with_two_versions_is_judged_on_the_highest(
    newest: str, expected: list[str]
) -> None:
    # The real listing has ScreenToGif twice (2.30.0 and 2.27.3); the catalog row is made up.
    row = {
        "patch_id": 1,
        "package_id": "NickeManarin.ScreenToGif",
        "package_name": "ScreenToGif",
        "publisher": "Nicke Manarin",
        "version": newest,
        "arch": "x86",
    }
    f = build_frames(
        endpoints=_w11(6060, [])["endpoints"],
        programs=_uninstall_listing(),
        app_catalog=[row],
        availability=[{"endpoint_id": 1, "server_id": 1}],
        server_patches=[{"server_id": 1, "patch_id": 1}],
    )
    assert scan(f).missing["reason"].tolist() == expected


def test_vectorised_scan_equals_the_reference_loop_on_a_synthetic_fleet(
    ms_catalog: pd.DataFrame, app_catalog: pd.DataFrame
) -> None:
    f = synthetic_fleet(ms_catalog, app_catalog, n_endpoints=400, programs_per_endpoint=40, seed=7)
    result = scan(f)
    ref_missing, ref_amb, ref_unmapped = scan_reference(f)
    pd.testing.assert_frame_equal(result.missing, ref_missing)
    pd.testing.assert_frame_equal(result.ambiguous, ref_amb)
    pd.testing.assert_frame_equal(result.unmapped, ref_unmapped)
    # The fleet exercises the interesting paths, so equality means something.
    reasons = " ".join(result.missing["reason"])
    for phrase in (
        "UBR unknown",
        "hotpatch",
        "not a Windows build",
        "also installed",
        "(x86)",
        "arch unknown",
    ):
        assert phrase in reasons, phrase
    assert set(result.ambiguous["reason"]) >= {"matches several packages by name"}


def test_hotpatch_endpoint_is_not_misled_by_document_dates(
    ms_catalog: pd.DataFrame, app_catalog: pd.DataFrame
) -> None:
    # KB5066782 (October 2025, 20348.4294) was added to the July 2024 document by a CVE
    # revision; the December 2024 document carries hotpatch KB5058500 (20348.3630). By date the
    # hotpatch would look newer and hide the regular update; by build it is not.
    eps = [
        {
            "endpoint_id": e,
            "hostname": f"s{e}",
            "os_name": "Windows Server 2022 Datacenter",
            "build": 20348,
            "ubr": ubr,
            "arch": "x64",
            "hotpatch": True,
            "installation_type": "Server",
        }
        for e, ubr in ((1, 3630), (2, 3453), (3, 4294))
    ]
    result = scan(_all_available({"endpoints": eps}, ms_catalog, app_catalog))
    kb_of = dict(zip(ms_catalog["patch_id"], ms_catalog["kb"], strict=False))
    got = {r.endpoint_id: kb_of[r.patch_id] for r in result.missing.itertuples()}
    assert got == {1: "KB5066782", 2: "KB5066782"}
