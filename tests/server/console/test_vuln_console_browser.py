"""Vulnerability intelligence in the console, in a real browser (Debian's Chromium, headless,
Playwright) against the real HTTPS server on loopback, on SQLite and MariaDB.

The fleet and catalog are the feeds test's (tests/flows/test_feeds_scan.py: the sample catalog, two
imported endpoints with 7-Zip 23.01/24.08 and Firefox 138.0, the real KEV, Mozilla and NVD
files as offline feed sources, one scan). An administrator reads the dashboard's exploited
tile (its figures are `patchflow dashboard --json`'s), follows it to Patch Install filtered on
Exploited, sees the rated severity and the "exploited" badge on the third-party patches,
switches the filters as a person would, opens 7-Zip's page with the CVEs it fixes, and one
endpoint's page with its own rated pairs.
Screenshots at 1280×900 and 1024×768 go to test-artifacts/console/.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.agent.harness import json_error
from tests.fixtures.browser import (  # noqa: F401 (chromium: the `browser` fixture)
    PASSWORD,
    USER,
    chromium,
    require_chromium,
    shots,
)
from tests.fixtures.console import add_admin, console_api, console_server  # noqa: F401

require_chromium()

from playwright.sync_api import Browser, Page, expect  # noqa: E402

from tests.flows.test_feeds_scan import _prepare  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(ignore_https_errors=True,
                                  viewport={"width": 1024, "height": 768})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    yield tab
    context.close()


def test_exploited_patches_from_dashboard_to_patch_page(
        api, cli, page: Page, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    backend = request.node.callspec.params["server"]
    _prepare(cli, tmp_path)
    assert add_admin(cli, monkeypatch).code == 0
    board = json.loads(cli("dashboard", "--json").out)
    listed = json.loads(cli("install", "list", "--json").out)
    zip_row = next(r for r in listed if r["patch"] == "7zip.7zip@25.01")
    firefox = next(r for r in listed if r["package_id"] == "Mozilla.Firefox")
    # The admin API's Patch Install list takes the same filter as `install list --exploited`.
    exploited = json.loads(cli("install", "list", "--json", "--exploited").out)
    with api.client(headers={"Authorization": f"Bearer {api.admin_token()}"}) as http:
        answer = http.get("/api/v1/admin/install/patches", params={"exploited": "true"})
        assert answer.status_code == 200 and answer.json() == exploited
        bad = http.get("/api/v1/admin/install/patches",
                       params={"exploited": "true", "severity": "urgent"})
        assert "unknown severity 'urgent'" in json_error(bad, 400)

    page.goto(f"{api.url}/console/dashboard")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.fill("#f-username", USER)
    page.fill("#f-password", PASSWORD)
    page.click("button[type=submit]")
    tile = page.locator("#exploited-tile")
    expect(tile.get_by_role("heading")).to_have_text("Exploited in the wild")
    expect(tile.locator("[data-figure=exploited_patches]")).to_have_text(
        str(board["exploited"]["patches"]))
    expect(tile.locator("[data-figure=exploited_pairs]")).to_have_text(
        str(board["exploited"]["pairs"]))
    expect(tile.locator("[data-figure=overdue_kev]")).to_have_text(str(board["overdue_kev"]))
    assert board["exploited"] == {"patches": 1, "pairs": 2} and board["overdue_kev"] == 2
    shots(page, f"vuln-dashboard-{backend}")

    # The tile's link: Patch Install with the Exploited filter on.
    tile.get_by_role("link", name="Install the exploited patches").click()
    expect(page).to_have_url(re.compile(r"/console/install\?exploited=yes"))
    expect(page.locator("#f-exploited")).to_have_value("yes")
    rows = page.locator("#missing tbody tr")
    expect(rows).to_have_count(board["exploited"]["patches"])
    row = page.locator('tr[data-patch="7zip.7zip@25.01"]')
    expect(row.locator("[data-severity]")).to_have_text("Important")
    expect(row.locator("[data-exploited]")).to_have_text("exploited")
    expect(row.locator("[data-exploited]")).to_have_attribute(
        "title", re.compile(r"CISA KEV, due 2025-02-27"))
    expect(row.locator("td.n").first).to_have_text("7.8")  # CVSS
    expect(row.locator("[data-affected]")).to_have_text(str(zip_row["endpoints"]))
    shots(page, f"vuln-install-exploited-{backend}")

    # All patches again, then the Severity filter: Firefox is rated Critical from its CVEs
    # (the catalog says nothing), and carries no exploited badge.
    page.select_option("#f-exploited", "")
    expect(page).to_have_url(re.compile(r"/console/install\?.*exploited=(&|$)"))
    expect(rows).to_have_count(len(listed))
    ff_row = page.locator(f'tr[data-patch="{firefox["patch"]}"]')
    expect(ff_row.locator("[data-severity]")).to_have_text("Critical")
    expect(ff_row.locator("[data-exploited]")).to_have_count(0)
    page.select_option("#f-severity", "Critical")
    expect(page).to_have_url(re.compile(r"severity=Critical"))
    expect(ff_row).to_be_visible()
    expect(page.locator('tr[data-patch="7zip.7zip@25.01"]')).to_have_count(0)
    page.select_option("#f-exploited", "yes")  # Critical and exploited: none
    expect(page.locator("p.empty")).to_contain_text("No missing patches match these filters")
    shots(page, f"vuln-install-none-{backend}")

    # The patch page: its rating, the badge, and the CVEs it fixes over 24.08.
    page.goto(f"{api.url}/console/install")
    page.locator('tr[data-patch="7zip.7zip@25.01"] a').first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("7-Zip")
    expect(page.locator("dd [data-severity]")).to_have_text("Important")
    expect(page.locator("dd [data-exploited]")).to_be_visible()
    vulns = page.locator("#vulnerabilities")
    expect(vulns.locator("tr[data-cve]")).to_have_count(2)
    kev = vulns.locator('tr[data-cve="CVE-2025-0411"]')
    expect(kev).to_contain_text("7.0")
    expect(kev).to_contain_text("2025-02-27")
    expect(kev.locator(".badge-exploited")).to_have_text("exploited")
    expect(vulns.locator('tr[data-cve="CVE-2025-53816"] .badge-exploited')).to_have_count(0)
    shots(page, f"vuln-patch-{backend}")

    # One endpoint's page: its own pairs, rated for the versions it has.
    page.goto(f"{api.url}/console/endpoints/WS-01")
    ws01 = page.locator("#missing")
    expect(ws01.locator('tr[data-patch="7zip.7zip"] [data-exploited]')).to_be_visible()
    expect(ws01.locator('tr[data-patch="7zip.7zip"] [data-severity]')).to_have_text("Important")
    expect(ws01.locator('tr[data-patch="Mozilla.Firefox"] [data-severity]')).to_have_text(
        "Critical")
    expect(ws01.locator('tr[data-patch="Mozilla.Firefox"] [data-exploited]')).to_have_count(0)
    shots(page, f"vuln-endpoint-{backend}")

    # A feed sync in progress is listed under "Running now"; once it ends, it is not.
    from models.db import session_scope
    from patchflow.catalog import vulnfeeds

    with session_scope(api.db_url) as session:
        vulnfeeds.begin(session, "nvd", "run-in-progress")
    page.goto(f"{api.url}/console/dashboard")
    running = page.locator("ul.running")
    expect(running).to_contain_text("Sync of the nvd vulnerability feed: starting")
    with session_scope(api.db_url) as session:
        assert vulnfeeds.end_run(session, "run-in-progress", "Stopped", "interrupted") == ["nvd"]
    page.reload()
    expect(running).not_to_contain_text("vulnerability feed")
