"""Vulnerability feed parsers (KEV, Mozilla, NVD, MSRC exploit status/CVSS) on the real files
in ../shared/fixtures. Expected values come from the fixtures' READMEs or grep over the raw files,
not from the parsers."""

from __future__ import annotations

import datetime as dt
import gzip

import pytest

from sources import kev, mozilla, nvd
from sources.msrc import (
    parse_cvrf,
    parse_cvrf_month,
    parse_cvrf_vulnerabilities,
    parse_updates_index,
)
from sources.records import SourceError
from tests.support.paths import SHARED_FIXTURES

SHARED = SHARED_FIXTURES
VULN = SHARED / "vuln"
KEV_FILE = VULN / "kev" / "known_exploited_vulnerabilities-2025-08-25.json.gz"

pytestmark = pytest.mark.skipif(not VULN.is_dir(), reason=f"real feeds not available at {VULN}")


def test_kev_catalog_counts_and_an_entry() -> None:
    catalog = kev.parse_kev(KEV_FILE.read_bytes())
    assert catalog.version == "2025.08.25"
    assert len(catalog.entries) == 1404 and catalog.errors == []
    by_cve = {e.cve: e for e in catalog.entries}
    entry = by_cve["CVE-2025-0411"]  # 7-Zip, README: added 2025-02-06, due 2025-02-27
    assert entry.exploited is True
    assert entry.kev_date_added == dt.date(2025, 2, 6)
    assert entry.kev_due_date == dt.date(2025, 2, 27)
    raw = gzip.decompress(KEV_FILE.read_bytes())
    assert sum(e.kev_ransomware is True for e in catalog.entries) == raw.count(
        b'"knownRansomwareCampaignUse": "Known"')


def test_kev_hostile_inputs_fail_with_one_line() -> None:
    truncated = KEV_FILE.read_bytes()[:5000]
    for raw in (truncated, gzip.decompress(KEV_FILE.read_bytes())[:5000], b"[]", b"\x00\x01"):
        with pytest.raises(SourceError) as info:
            kev.parse_kev(raw, "kev.json")
        assert "\n" not in str(info.value) and str(info.value).startswith("kev.json: ")
    partial = kev.parse_kev(b'{"vulnerabilities": [{"cveID": "CVE-2025-0411"}, {"cveID": 3}, 7]}')
    assert [e.cve for e in partial.entries] == ["CVE-2025-0411"]
    assert partial.errors == ["KEV catalog: 2 entries without a valid cveID skipped"]



def test_deeply_nested_json_is_one_line_everywhere() -> None:
    """Every JSON upstream goes through sources.records.load_json: nesting deep enough to
    exhaust the decoder's recursion is a one-line SourceError, not a RecursionError traceback
    (the KEV and MSRC readers let it through before they shared the reader)."""
    deep = b"[" * 100_000
    readers = [lambda: kev.parse_kev(deep, "kev.json"),
               lambda: nvd.parse_file(deep, "kev.json"),
               lambda: parse_updates_index(deep),
               lambda: parse_cvrf(b'{"a":' * 100_000, "kev.json")]
    for read in readers:
        with pytest.raises(SourceError) as info:
            read()
        assert "\n" not in str(info.value) and "malformed JSON" in str(info.value)

@pytest.fixture(scope="module")
def advisories() -> dict[str, mozilla.MozillaAdvisory]:
    return {key: mozilla.parse_advisory(raw, key)
            for key, raw in mozilla.iter_directory(VULN / "mozilla")}


def test_mozilla_every_file_parses(advisories: dict[str, mozilla.MozillaAdvisory]) -> None:
    files = list((VULN / "mozilla").rglob("mfsa*.yml"))
    assert len(advisories) == len(files) == 168
    assert all(a.announced is not None for a in advisories.values())
    # CVE keys counted with grep '^  CVE-' over the files.
    cves = sum(
        sum(1 for line in f.read_text().splitlines() if line.startswith("  CVE-")) for f in files)
    assert sum(len(a.facts) for a in advisories.values()) == cves


def test_mozilla_fixed_in_and_impact(advisories: dict[str, mozilla.MozillaAdvisory]) -> None:
    adv = advisories["mfsa2025-36"]
    assert adv.fixed_in == ("Firefox 138.0.4",)
    assert adv.announced == dt.date(2025, 5, 17) and adv.impact == "critical"
    assert {f.cve: f.vendor_rating for f in adv.facts} == {
        "CVE-2025-4918": "critical", "CVE-2025-4919": "critical"}
    rng = next(r for r in adv.ranges if r.cve == "CVE-2025-4918")
    assert (rng.package, rng.end_excluding, rng.branch) == ("mozilla:firefox", "138.0.4", None)


def test_mozilla_esr_and_thunderbird_esr_keep_their_branch(
    advisories: dict[str, mozilla.MozillaAdvisory],
) -> None:
    esr = [r for a in advisories.values() for r in a.ranges if r.package == mozilla.FIREFOX_ESR]
    assert esr and all(r.branch == r.end_excluding.split(".")[0] for r in esr)
    # title "... Thunderbird ESR 128.6", fixed_in "Thunderbird 128.6"
    bird = advisories["mfsa2025-05"]
    assert bird.fixed_in == ("Thunderbird 128.6",)
    assert {(r.package, r.branch) for r in bird.ranges} == {(mozilla.THUNDERBIRD, "128")}


def test_mozilla_hostile_files_fail_alone() -> None:
    for raw in (b"advisories: [unclosed", b"- just\n- a list\n", b"advisories: 3\n",
                b"a: &a [*a, *a]\nadvisories: {}\n" * 1 + b"\x00"):
        with pytest.raises(SourceError) as info:
            mozilla.parse_advisory(raw, "mfsa2099-01")
        assert "\n" not in str(info.value) and str(info.value).startswith("mfsa2099-01: ")


@pytest.fixture(scope="module")
def records() -> dict[str, nvd.NvdRecord]:
    out = {}
    for name, raw in nvd.iter_directory(VULN / "nvd"):
        (record,) = nvd.parse_file(raw, name)
        out[record.cve] = record
    return out


def test_nvd_every_record(records: dict[str, nvd.NvdRecord]) -> None:
    assert len(records) == 28
    # README: 16 records carry an nvd@nist.gov Primary v3 score, the other 12 CNA/ADP only.
    assert sum(r.facts.score_source == "nvd" for r in records.values()) == 16
    assert all(r.facts.cvss is not None for r in records.values())
    # README: three records are in KEV and carry cisa* fields.
    assert {c for c, r in records.items() if r.facts.exploited} == {
        "CVE-2025-0411", "CVE-2023-26369", "CVE-2024-9680"}
    # README: no configurations.
    for cve in ("CVE-2023-40481", "CVE-2025-49144", "CVE-2024-46461"):
        assert records[cve].ranges == []


def test_nvd_version_end_excluding_and_escapes(records: dict[str, nvd.NvdRecord]) -> None:
    (rng,) = records["CVE-2024-11477"].ranges
    assert (rng.package, rng.end_excluding) == ("7-zip:7-zip", "24.07")
    (npp,) = records["CVE-2023-40031"].ranges
    assert (npp.package, npp.end_including) == ("notepad-plus-plus:notepad++", "8.5.6")
    ff = {(r.package, r.start_including, r.end_excluding, r.exact)
          for r in records["CVE-2024-9680"].ranges}
    assert ("mozilla:firefox", None, "131.0.2", None) in ff
    assert ("mozilla:firefox_esr", "128.1.0", "128.3.1", None) in ff
    assert ("mozilla:thunderbird", None, None, "131.0") in ff
    # Linux-only AND configuration: the 7-Zip range never matches Windows.
    assert all(r.package != "7-zip:7-zip" for r in records["CVE-2023-31102"].ranges)
    # Windows x64 platform node: kept, as an exact version.
    assert [(r.package, r.exact) for r in records["CVE-2025-11001"].ranges] == [
        ("7-zip:7-zip", "24.09")]


def test_nvd_cna_only_scores(records: dict[str, nvd.NvdRecord]) -> None:
    adobe = records["CVE-2023-26369"].facts  # psirt@adobe.com Secondary only, 7.8
    assert (adobe.cvss, adobe.score_source) == (7.8, "vendor")
    assert adobe.kev_due_date == dt.date(2023, 10, 5)
    vlc = records["CVE-2024-46461"].facts  # CISA ADP only, 8.0
    assert (vlc.cvss, vlc.score_source) == (8.0, "cisa-adp")
    zip_ = records["CVE-2025-11001"].facts  # NVD 7.8 beats ZDI's 7.0
    assert (zip_.cvss, zip_.score_source) == (7.8, "nvd")
    assert zip_.vector is not None and zip_.vector.startswith("CVSS:3.1/")


def test_nvd_hostile_files_fail_alone() -> None:
    raw = (VULN / "nvd" / "CVE-2024-9680.json").read_bytes()
    for bad in (raw[: len(raw) // 2], b"[1, 2]", b'{"id": "not-a-cve"}', b"[" * 100000):
        with pytest.raises(SourceError) as info:
            nvd.parse_file(bad, "x.json")
        assert "\n" not in str(info.value) and str(info.value).startswith("x.json: ")
    page = b'{"totalResults": 2, "vulnerabilities": [{"cve": %s}, {"cve": 5}]}' % raw
    records, total = nvd.parse_page(__import__("json").loads(page), "page")
    assert [r.cve for r in records] == ["CVE-2024-9680"] and total == 2


MSRC = SHARED / "msrc"
# "Exploited:Yes" occurrences per month, counted with zcat | grep -o.
EXPLOITED = {"2024-Jan": 0, "2024-Feb": 4, "2024-Mar": 0, "2024-Apr": 1, "2024-May": 2,
             "2024-Jun": 0, "2024-Jul": 2, "2024-Aug": 6, "2024-Sep": 5, "2024-Oct": 2,
             "2024-Nov": 3, "2024-Dec": 1}


@pytest.mark.parametrize("month", sorted(EXPLOITED))
def test_msrc_exploit_status_per_month(month: str) -> None:
    facts = parse_cvrf_vulnerabilities((MSRC / f"{month}.xml.gz").read_bytes(), month)
    assert sum(f.facts.exploited is True for f in facts) == EXPLOITED[month]
    # 0.0 is real (CVE-2024-47611 in 2024-Oct: C:N/I:N/A:N), so the bound is inclusive.
    assert all(f.facts.cvss is None or 0 <= f.facts.cvss <= 10 for f in facts)


def test_msrc_cvss_per_product_json_and_xml() -> None:
    (first, *_) = parse_cvrf_vulnerabilities((MSRC / "2026-Jun-excerpt.json").read_bytes())
    assert first.facts.cve == "CVE-2026-41108"
    assert first.facts.cvss == 7.0 and first.facts.score_source == "vendor"
    assert first.facts.vector == "CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:H/I:H/A:H/E:U/RL:O/RC:C"
    assert (first.facts.exploited, first.facts.publicly_disclosed) == (False, False)
    assert first.per_product["Windows 10 Version 1809 for x64-based Systems"][0] == 7.0
    aug = {f.facts.cve: f for f in parse_cvrf_vulnerabilities(
        (MSRC / "2024-Aug.xml.gz").read_bytes())}
    assert aug["CVE-2024-38178"].facts.exploited is True
    with pytest.raises(SourceError, match=r"^bad: "):
        parse_cvrf_vulnerabilities(b"<cvrfdoc", "bad")


@pytest.mark.parametrize("name", ["2024-Aug.xml.gz", "2026-Jun-excerpt.json"])
def test_a_sync_reads_a_month_once_for_both_patches_and_facts(name: str) -> None:
    """parse_cvrf_month (what a sync calls) gives what the two parsers give on their own."""
    raw = (MSRC / name).read_bytes()
    doc, facts = parse_cvrf_month(raw, name)
    assert doc == parse_cvrf(raw, name) and doc.patches
    assert facts == parse_cvrf_vulnerabilities(raw, name) and facts
