"""The scan results and the catalog with the vulnerability feeds (real KEV, Mozilla and NVD
files as offline sources), on SQLite and MariaDB: pair severity, CVEs, CVSS, exploited, KEV due
date and risk in `missing --json`, `--exploited`, `--sort risk`, `--explain`, and
`patches show --json`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
from tests.conftest import shared_fixtures
from tests.flows.test_scan_flow import _inventory, _program
from tests.support.report_seed import sql_rows

pytestmark = pytest.mark.usefixtures("prefect")

FLEET = [
    _inventory("WS-01", "Windows 11 Pro", "23H2", 22631, 6000, ["KB5900110", "5900150"],
               [_program("7-Zip 23.01 (x64)", "23.01", "Igor Pavlov"),
                _program("Mozilla Firefox (x64 en-US)", "138.0", "Mozilla")]),
    _inventory("WS-02", "Windows 11 Pro", "23H2", 22631, 6000, ["KB5900110", "5900150"],
               [_program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov")]),
]


def _prepare(cli, tmp_path: Path) -> None:
    vuln = shared_fixtures("vuln")
    assert cli("init").code == 0
    r = cli("server", "add", "local", "--host", "h", "--msrc-source", str(MSRC_DIR),
            "--winget-source", str(WINGET_DIR), "--winget-packages", ",".join(PACKAGES))
    assert r.code == 0, r.err
    assert cli("sync", "local").code == 0
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(FLEET))
    assert cli("endpoints", "import", str(path)).code == 0
    assert cli("feeds", "set", "kev", "--source",
               str(next((vuln / "kev").glob("*.json.gz")))).code == 0
    assert cli("feeds", "set", "mozilla", "--source", str(vuln / "mozilla")).code == 0
    assert cli("feeds", "set", "nvd", "--source", str(vuln / "nvd")).code == 0
    r = cli("feeds", "sync")
    assert r.code == 0, r.out + r.err
    r = cli("scan", "--all", "--json")
    assert r.code == 0, r.err


def test_missing_pairs_are_rated(cli, home: Path, tmp_path: Path) -> None:
    _prepare(cli, tmp_path)
    r = cli("missing", "--json")
    assert r.code == 0, r.err
    rows = {(x["endpoint"], x["package_id"]): x for x in json.loads(r.out) if x["package_id"]}
    zip_old = rows[("WS-01", "7zip.7zip")]
    assert zip_old["installed_version"] == "23.01" and zip_old["available_version"] == "25.01"
    # NVD: CVE-2024-11477 (< 24.07, 7.8), CVE-2025-0411 (< 24.09, 7.0, KEV due 2025-02-27),
    # CVE-2025-53816 (< 25.00, 7.5).
    assert zip_old["cves"] == ["CVE-2024-11477", "CVE-2025-0411", "CVE-2025-53816"]
    assert zip_old["severity"] == "Important" and zip_old["cvss"] == 7.8
    assert zip_old["exploited"] is True and zip_old["kev_due_date"] == "2025-02-27"
    assert 7.8 * 5 + 30 + 10 <= zip_old["risk"] <= 100
    zip_new = rows[("WS-02", "7zip.7zip")]
    assert zip_new["cves"] == ["CVE-2025-0411", "CVE-2025-53816"]
    firefox = rows[("WS-01", "Mozilla.Firefox")]
    assert firefox["severity"] == "Critical"
    assert {"CVE-2025-4918", "CVE-2025-4919"} <= set(firefox["cves"])

    r = cli("missing", "--json", "--sort", "risk")
    risks = [x["risk"] for x in json.loads(r.out)]
    assert risks == sorted(risks, reverse=True) and risks
    r = cli("missing", "--json", "--exploited")
    assert r.code == 0 and all(x["exploited"] for x in json.loads(r.out))
    assert {x["package_id"] for x in json.loads(r.out)} >= {"7zip.7zip"}
    r = cli("missing", "--json", "--severity", "critical")
    assert {(x["endpoint"], x["package_id"]) for x in json.loads(r.out)
            if x["package_id"]} == {("WS-01", "Mozilla.Firefox")}
    assert cli("missing", "--sort", "age").code == 2
    r = cli("dashboard", "--json")
    assert r.code == 0, r.err
    board = json.loads(r.out)
    # Both 7-Zip pairs carry CVE-2025-0411 (KEV, due 2025-02-27: passed); Firefox 138.0 ->
    # 145.0 carries none of the fixtures' KEV CVEs.
    assert board["exploited"] == {"patches": 1, "pairs": 2}
    assert board["overdue_kev"] == 2
    # The severity chart counts third-party pairs at their rated severity, as `missing` lists
    # them (the catalog holds none for them): Firefox Critical, 7-Zip Important.
    listed = Counter(x["severity"] for x in json.loads(cli("missing", "--json").out))
    charted = {name: v["pairs"] for name, v in board["missing_by_severity"].items() if v["pairs"]}
    assert charted == dict(listed) and listed["Important"] >= 2

    r = cli("missing", "--explain", "WS-01", "7zip.7zip@25.01")
    assert r.code == 0, r.err
    said = " ".join(r.out.split())
    assert "Severity: Important: CVE-2024-11477 (CVSS 7.8, nvd), fixed in " in said
    assert "24.07; installed 23.01 (+2 more CVEs)" in said


def test_patch_show_lists_vulnerabilities(cli, home: Path, db_url: str, tmp_path: Path) -> None:
    _prepare(cli, tmp_path)
    r = cli("patches", "show", "7zip.7zip@25.01", "--json")
    assert r.code == 0, r.err
    shown = json.loads(r.out)
    # Fixed over the previous catalog version 24.08.
    assert [v["cve"] for v in shown["vulnerabilities"]] == ["CVE-2025-0411", "CVE-2025-53816"]
    assert shown["cvss_max"] == 7.5 and shown["exploited"] is True
    kev = shown["vulnerabilities"][0]
    assert kev == {"cve": "CVE-2025-0411", "cvss": 7.0, "score_source": "nvd",
                   "vendor_rating": None, "exploited": True, "kev": True,
                   "kev_due_date": "2025-02-27"}
    # The same links are stored for SQL readers (reports) by the feeds sync.
    linked = sql_rows(db_url, "SELECT pv.cve FROM patch_vulnerabilities pv JOIN "
                      "patches p ON p.id = pv.patch_id WHERE p.ukey = '7zip.7zip@25.01' "
                      "ORDER BY pv.cve")
    assert [c for (c,) in linked] == ["CVE-2025-0411", "CVE-2025-53816"]
    r = cli("patches", "show", "KB5900110", "--json")
    assert r.code == 0 and "vulnerabilities" in json.loads(r.out)


def test_catalog_sync_keeps_msrc_cvss_and_exploit_status(cli, home: Path, tmp_path: Path) -> None:
    """The real June 2026 excerpt: CVE-2026-41108 scores 7.0 (MSRC, per product) and is not
    exploited; KB5093998 fixes it."""
    real = shared_fixtures("msrc", "2026-Jun-excerpt.json")
    mirror = tmp_path / "msrc"
    mirror.mkdir()
    (mirror / "2026-Jun.json").write_bytes(real.read_bytes())
    assert cli("init").code == 0
    r = cli("server", "add", "local", "--host", "h", "--msrc-source", str(mirror),
            "--winget-source", str(WINGET_DIR), "--winget-packages", "7zip.7zip")
    assert r.code == 0, r.err
    assert cli("sync", "local").code == 0
    shown = json.loads(cli("patches", "show", "KB5093998", "--json").out)
    assert shown["vulnerabilities"] == [{
        "cve": "CVE-2026-41108", "cvss": 7.0, "score_source": "vendor", "vendor_rating": None,
        "exploited": False, "kev": False, "kev_due_date": None}]
    assert shown["cvss_max"] == 7.0 and shown["exploited"] is False
