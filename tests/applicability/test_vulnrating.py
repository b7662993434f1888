"""Per-pair rating on the real Mozilla, NVD and KEV files: which CVEs a pair fixes, its severity,
ESR kept apart from release, a package without CPE mapping, and the risk score."""

from __future__ import annotations

import datetime as dt

import pytest

from applicability.vulnrating import (
    CveView,
    affects,
    cvss_severity,
    merge_facts,
    pair_cves,
    rate_pair,
    risk_score,
)
from sources import kev, mozilla, nvd
from sources.vulnrecords import AffectedRange, VulnFacts
from tests.support.paths import SHARED_FIXTURES

VULN = SHARED_FIXTURES / "vuln"
pytestmark = pytest.mark.skipif(not VULN.is_dir(), reason=f"real feeds not available at {VULN}")
TODAY = dt.date(2025, 8, 25)


@pytest.fixture(scope="module")
def feeds() -> tuple[list[AffectedRange], dict[str, CveView]]:
    ranges: list[AffectedRange] = []
    facts: list[VulnFacts] = []
    for key, raw in mozilla.iter_directory(VULN / "mozilla"):
        adv = mozilla.parse_advisory(raw, key)
        ranges += adv.ranges
        facts += adv.facts
    for name, raw in nvd.iter_directory(VULN / "nvd"):
        for rec in nvd.parse_file(raw, name):
            ranges += rec.ranges
            facts.append(rec.facts)
    facts += kev.parse_kev(next((VULN / "kev").glob("*.json.gz")).read_bytes()).entries
    return ranges, merge_facts(facts)


def _of(ranges: list[AffectedRange], package: str) -> list[AffectedRange]:
    return [r for r in ranges if r.package == package]


def test_firefox_pair_from_the_issue(feeds) -> None:
    ranges, views = feeds
    rating = rate_pair("mozilla:firefox", _of(ranges, "mozilla:firefox"), views, "138.0",
                       "140.0", "Firefox", TODAY)
    assert {"CVE-2025-4918", "CVE-2025-4919"} <= set(rating.cves)
    assert rating.severity == "Critical"
    assert rating.explain.startswith(
        "Critical: CVE-2025-4918 (Mozilla: critical), fixed in Firefox 138.0.4; installed 138.0")


def test_installed_firefox_140_against_catalog_versions(feeds) -> None:
    ranges, views = feeds
    fx = _of(ranges, "mozilla:firefox")
    # Catalog versions of the fixtures' winget manifests: 100.0 and 140.0. Installed 140.0 is
    # not missing either; against a newer release it gets exactly the CVEs fixed after 140.
    assert pair_cves(fx, "140.0", "140.0") == []
    assert pair_cves(fx, "140.0", "100.0") == []
    newer = rate_pair("mozilla:firefox", fx, views, "140.0", "141", "Firefox", TODAY)
    fixed_141 = mozilla.parse_advisory(
        (VULN / "mozilla" / "2025" / "mfsa2025-56.yml").read_bytes(), "mfsa2025-56")
    assert fixed_141.fixed_in == ("Firefox 141",)
    assert set(newer.cves) == {f.cve for f in fixed_141.facts}
    # Installed 128.0 against 140.0: CVE-2024-9680 (KEV, exploited, fixed in 131.0.2) is in it.
    old = rate_pair("mozilla:firefox", fx, views, "128.0", "140.0", "Firefox", TODAY)
    assert "CVE-2024-9680" in old.cves and old.exploited
    assert old.kev_due_date == dt.date(2024, 11, 5)
    # CVSS 10.0 (CVE-2025-2857, CISA ADP) x 5 + exploited 30 + KEV due date passed 10.
    assert old.cvss == 10.0 and old.risk == 90


def test_esr_and_release_kept_apart(feeds) -> None:
    ranges, _ = feeds
    esr = _of(ranges, "mozilla:firefox_esr")
    release = _of(ranges, "mozilla:firefox")
    # CVE-2025-4918 was fixed in Firefox 138.0.4 and ESR 128.10.1 (mfsa2025-36 and -37).
    on_esr = {c for c, _ in pair_cves(esr, "128.10.0", "128.12")}
    on_release = {c for c, _ in pair_cves(release, "128.10.0", "128.12")}
    assert "CVE-2025-4918" in on_esr
    # A release-channel install of 128.10 is not on a train with a 128.12 release build.
    assert on_release == set()
    # It was also fixed on ESR 115 (mfsa2025-38: ESR 115.23.1): an ESR 115 install is rated
    # by the 115 fix, never by the 128 one.
    assert all(r.branch for r in esr if r.source == "mozilla")
    on_115 = dict(pair_cves(esr, "115.20", "115.24"))
    assert on_115["CVE-2025-4918"].fixed_in == "Firefox ESR 115.23.1"
    assert "CVE-2025-4918" not in dict(pair_cves(esr, "115.20", "115.23"))


def test_cvss_only_and_unspecified_reasons(feeds) -> None:
    ranges, views = feeds
    zip_ = rate_pair("7-zip:7-zip", _of(ranges, "7-zip:7-zip"), views, "23.01", "26.03",
                     "7-Zip", TODAY)
    # NVD: CVE-2024-11477 (< 24.07, 7.8), CVE-2025-0411 (< 24.09, 7.0, KEV), CVE-2025-53816
    # (< 25.00, 7.5); CVE-2025-11001 is only 24.09; CVE-2023-31102 is Linux only.
    assert set(zip_.cves) == {"CVE-2024-11477", "CVE-2025-0411", "CVE-2025-53816"}
    assert zip_.severity == "Important" and zip_.cvss == 7.8 and zip_.exploited
    assert zip_.explain.startswith("Important: CVE-2024-11477 (CVSS 7.8, nvd), fixed in 7-Zip "
                                   "24.07; installed 23.01")
    none = rate_pair(None, [], views, "1.0", "2.0", "WinSCP", TODAY)
    assert none.severity == "Unspecified" and "no CPE mapping for WinSCP" in none.explain
    java = rate_pair("oracle:jre", _of(ranges, "oracle:jre"), views, "8.0.4010.10",
                     "8.0.4510.9", "Java", TODAY)
    assert java.severity == "Unspecified" and "no known CVE of oracle:jre" in java.explain


def test_bounds_and_scores() -> None:
    rng = AffectedRange(cve="C", source="nvd", package="p", start_including="15.007.20033",
                        end_excluding="23.006.20320")
    assert affects(rng, "23.006.20319") and not affects(rng, "23.006.20320")
    assert not affects(rng, "15.006.1")
    incl = AffectedRange(cve="C", source="nvd", package="p", end_including="8.5.6")
    assert affects(incl, "8.5.6") and not affects(incl, "8.5.7")
    assert [cvss_severity(s) for s in (10, 9.0, 8.9, 7.0, 6.9, 4.0, 3.9, 0.1, 0.0, None)] == [
        "Critical", "Critical", "Important", "Important", "Moderate", "Moderate", "Low", "Low",
        "Unspecified", "Unspecified"]
    assert risk_score("Important", 7.8, False, None, TODAY) == 39
    assert risk_score("Important", 7.0, True, dt.date(2025, 2, 27), TODAY) == 75
    assert risk_score("Critical", None, False, None, TODAY, TODAY - dt.timedelta(days=90)) == 55
    assert risk_score("Critical", 10.0, True, dt.date(2020, 1, 1), TODAY,
                      dt.date(2020, 1, 1)) == 100


def test_unknown_versions_from_a_frame_are_unspecified(feeds) -> None:
    # Missing-pair frames carry an unknown installed version as NaN, which is truthy.
    ranges, views = feeds
    for installed, available in ((float("nan"), "140.0"), ("138.0", float("nan")), ("  ", "1")):
        rating = rate_pair("mozilla:firefox", _of(ranges, "mozilla:firefox"), views,
                           installed, available, "Firefox", TODAY)  # type: ignore[arg-type]
        assert rating.severity == "Unspecified"
        assert "version unknown" in rating.explain
