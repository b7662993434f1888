"""MSRC parser on the real 2024 CVRF documents in ../shared/fixtures/msrc.

Expected values were read out of the XML by hand (grep), not produced by the parser.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sources.msrc import iter_directory, parse_cvrf, parse_updates_index
from sources.records import RESTART_VALUES, SEVERITIES, ParsedDocument, PatchRecord
from tests.support.paths import SHARED_FIXTURES

SHARED = SHARED_FIXTURES
MSRC = SHARED / "msrc"

pytestmark = pytest.mark.skipif(
    not MSRC.is_dir(), reason=f"real MSRC documents not available at {MSRC}"
)

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Distinct KB numbers in Vendor Fix remediations per month (counted with grep over the XML;
# 2024-Jan = 37 is also stated in the fixtures README).
KB_COUNTS = {"2024-Jan": 37, "2024-Feb": 47, "2024-Mar": 43, "2024-Apr": 54, "2024-May": 22,
             "2024-Jun": 28, "2024-Jul": 57, "2024-Aug": 82, "2024-Sep": 46, "2024-Oct": 69,
             "2024-Nov": 35, "2024-Dec": 45}


@pytest.fixture(scope="module")
def docs() -> dict[str, ParsedDocument]:
    parsed = {}
    for key, raw in iter_directory(MSRC):
        doc = parse_cvrf(raw, key)
        parsed[doc.key] = doc
    return parsed


def _patch(doc: ParsedDocument, kb: str) -> PatchRecord:
    return next(p for p in doc.patches if p.kb == kb)


def _rows(patch: PatchRecord) -> dict[str, tuple[str | None, str | None, str | None, str]]:
    return {r.name: (r.fixed_build, r.supersedes, r.subtype, r.severity) for r in patch.products}


def test_all_months_parse_with_expected_kb_counts(docs: dict[str, ParsedDocument]) -> None:
    assert set(docs) == {f"2024-{m}" for m in MONTHS} | {"2026-Jun"}
    assert {
        k: len([p for p in d.patches if p.kb]) for k, d in docs.items() if k.startswith("2024")
    } == KB_COUNTS
    for doc in docs.values():
        assert doc.errors == []
        for patch in doc.patches:
            if patch.kb is None:  # a version-only fix (Edge...): tested below
                assert patch.key.startswith("msrc:") and patch.version
                continue
            assert patch.key.startswith("KB") and patch.key[2:].isdigit()
            assert patch.severity in SEVERITIES
            assert patch.restart_required in RESTART_VALUES
            # Advisories (ADV240002) sit in the CVE field of a few vulnerabilities.
            assert patch.cves and all(c.startswith(("CVE-", "ADV")) for c in patch.cves)
            assert patch.products
            assert all(r.restart_required in (*RESTART_VALUES, None) for r in patch.products)


def test_document_dates(docs: dict[str, ParsedDocument]) -> None:
    jan = docs["2024-Jan"]
    assert jan.release_date == dt.date(2026, 6, 28)  # CurrentReleaseDate of the capture
    assert {p.release_date for p in jan.patches} == {dt.date(2024, 1, 9)}  # Patch Tuesday
    assert len(jan.content_hash) == 64


def test_windows_11_cumulative_2024_jan(docs: dict[str, ParsedDocument]) -> None:
    patch = _patch(docs["2024-Jan"], "KB5034123")
    assert patch.title == (
        "2024-01 Security Update for Windows 11 Version 22H2, Windows 11 Version 23H2 (KB5034123)")
    assert _rows(patch) == {
        "Windows 11 Version 22H2 for ARM64-based Systems":
            ("10.0.22621.3007", "KB5033375", "Security Update", "Critical"),
        "Windows 11 Version 22H2 for x64-based Systems":
            ("10.0.22621.3007", "KB5033375", "Security Update", "Critical"),
        "Windows 11 Version 23H2 for ARM64-based Systems":
            ("10.0.22631.3007", "KB5033375", "Security Update", "Critical"),
        "Windows 11 Version 23H2 for x64-based Systems":
            ("10.0.22631.3007", "KB5033375", "Security Update", "Critical"),
    }
    assert patch.severity == "Critical"  # CVE-2024-20674 and CVE-2024-20700 are Critical
    assert {"CVE-2024-20674", "CVE-2024-20700"} <= set(patch.cves)
    assert len(patch.cves) == 35
    assert patch.restart_required == "Required"
    assert patch.supersedes == ("KB5033375",)
    assert patch.info_url == "https://catalog.update.microsoft.com/v7/site/Search.aspx?q=KB5034123"


def test_monthly_rollup_and_compound_product_ids(docs: dict[str, ParsedDocument]) -> None:
    jan = docs["2024-Jan"]
    rollup = _patch(jan, "KB5034169")
    assert _rows(rollup)["Windows Server 2008 R2 for x64-based Systems Service Pack 1"][:3] == (
        "6.1.7601.26910", "KB5033433", "Monthly Rollup")
    dotnet = _patch(jan, "KB5034279")  # products "2472-10483", "11650-10483", ...
    rows = _rows(dotnet)
    assert rows["Microsoft .NET Framework 4.8 on Windows Server 2012 R2"][0] == "4.8.04690.02"
    assert rows["Microsoft .NET Framework 3.5 on Windows Server 2012 R2"][0] == "3.0.50727.8976"
    assert dotnet.restart_required == "May Require"  # RestartRequired "Maybe" everywhere
    assert dotnet.supersedes == ()  # no Supercedence published


def test_hotpatch_subtype_is_preserved(docs: dict[str, ParsedDocument]) -> None:
    patch = _patch(docs["2024-Mar"], "KB5035959")
    assert _rows(patch)["Windows Server 2022"][:3] == (
        "10.0.20348.2333", "KB5034860", "SecurityHotpatchUpdate")
    assert "Hotpatch" in patch.title
    spelled = _patch(docs["2024-Jun"], "KB5039330")  # the other spelling MSRC uses
    assert {r.subtype for r in spelled.products} == {"Security Hotpatch Update"}


def test_linux_and_release_note_fixes_are_not_patches(docs: dict[str, ParsedDocument]) -> None:
    names = {r.name for d in docs.values() for p in d.patches for r in p.products}
    assert not any("Azure Linux" in n or "CBL Mariner" in n for n in names)


def test_version_only_fixes_of_windows_products(docs: dict[str, ParsedDocument]) -> None:
    """Edge's "Release Notes" fixes become version-only patches (no KB); Mac, Linux and Android
    Release Notes never do."""
    dec = {p.key: p for p in docs["2024-Dec"].patches if p.kb is None}
    edge = dec["msrc:Microsoft Edge (Chromium-based)@131.0.2903.112"]
    assert edge.version == "131.0.2903.112"
    assert [(r.name, r.fixed_build) for r in edge.products] == [
        ("Microsoft Edge (Chromium-based)", "131.0.2903.112")]
    assert edge.title == (
        "2024-12 Security Update for Microsoft Edge (Chromium-based) 131.0.2903.112")
    names = {r.name for d in docs.values() for p in d.patches if p.kb is None for r in p.products}
    assert ".NET 9.0 installed on Windows" in names
    assert "Remote Desktop client for Windows Desktop" in names
    assert not any(w in n for n in names for w in ("Linux", "Mac", "Android", "iOS", "Azure"))


def test_json_excerpt_matches_xml_structure(docs: dict[str, ParsedDocument]) -> None:
    june = docs["2026-Jun"]
    assert june.release_date == dt.date(2026, 7, 7)
    assert len(june.patches) == 11
    patch = _patch(june, "KB5094123")
    assert _rows(patch) == {
        name: ("10.0.17763.8880", "KB5087538", "Security Update", "Important")
        for name in ("Windows 10 Version 1809 for 32-bit Systems",
                     "Windows 10 Version 1809 for x64-based Systems",
                     "Windows Server 2019", "Windows Server 2019 (Server Core installation)")
    }
    assert patch.release_date == dt.date(2026, 6, 9)
    assert patch.title.startswith("2026-06 Security Update for Windows 10 Version 1809")
    # Same record shape as from XML: every field type matches a 2024 XML patch.
    xml_patch = _patch(docs["2024-Jan"], "KB5034123")
    for name in PatchRecord.__dataclass_fields__:
        assert type(getattr(patch, name)) is type(getattr(xml_patch, name)), name


def test_updates_index() -> None:
    entries = parse_updates_index((MSRC / "updates-index.json").read_bytes())
    assert len(entries) == 190
    by_id = {e["ID"]: e for e in entries}
    assert by_id["2024-Jan"]["CvrfUrl"] == "https://api.msrc.microsoft.com/cvrf/v3.0/cvrf/2024-Jan"
    assert isinstance(by_id["2024-Jan"]["CurrentReleaseDate"], dt.date)
    assert "2017-May-B" in by_id
