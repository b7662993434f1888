"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright against
the real HTTPS server on loopback, with real (simulated-platform) agents enrolled over HTTPS.

One walk through an administrator's day: log in (after a refused login), add a patch server,
set its sources, filters and schedule, sync it from the bundled sample catalog, scan endpoints
from the Endpoints page, add a policy, filter the missing patches, accept a EULA, choose
endpoints in the dialog, refresh, choose again, start an install and watch the job finish, make
a report and open it (its patch links lead to the console's patch page), download its CSV, and
check the dashboard's bar chart against `patchflow dashboard --json`. Every page is saved as a
screenshot under test-artifacts/console/ at 1024×768, the product's minimum display.

Without /usr/bin/chromium the module is skipped with the reason (the Makefile's test target
installs it); in CI (CI=true) a missing browser fails instead.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
from tests.fixtures.agent.harness import Api, running_api
from tests.fixtures.browser import (  # noqa: F401 (chromium: the `browser` fixture)
    ARTIFACTS,
    FLASH,
    PASSWORD,
    USER,
    chromium,
    require_chromium,
)

require_chromium()

from playwright.sync_api import Browser, Page, expect  # noqa: E402

from tests.fixtures.install.agents import (  # noqa: E402
    SimAgent,
    inventory,
    program,
    serve_sample_installers,
)
from tests.support.httpserver import serve_files  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, prefect: None) -> Iterator[dict[str, Any]]:
    """Server (SQLite), a loopback vendor for installers, an administrator, the install flow
    run in-process (the console starts it through the same launcher as the admin API)."""
    from models.db import session_scope
    from patchflow import config, fleet
    from patchflow.install import launch
    from patchflow.ops import accounts

    folder = tmp_path_factory.mktemp("console")
    with running_api("sqlite", folder) as api, serve_files() as vendor:
        config.write_config({
            "install": {"poll_seconds": 0.1, "retry_delay_s": 0, "item_timeout_s": 60},
            "console": {"url": f"{api.url}/console"},
        })
        with session_scope(api.db_url) as session:
            accounts.add_admin(session, USER, PASSWORD)
            fleet.add_group(session, "Workstations")
            fleet.add_group(session, "Berlin", "Workstations")
        original = launch.LAUNCHER[0]
        launch.LAUNCHER[0] = _launch_in_thread
        try:
            yield {"api": api, "vendor": vendor, "folder": folder}
        finally:
            launch.LAUNCHER[0] = original


def _launch_in_thread(job_id: int) -> int:
    """The install flow for a job, on a thread of this process (the Prefect test server is
    this process's); stands in for the detached `patchflow jobs resume` process."""
    from flows.install import install

    threading.Thread(target=install, args=(job_id,), daemon=True).start()
    return os.getpid()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1024,
                                                                       "height": 768},
                                  accept_downloads=True)
    context.set_default_timeout(20_000)
    tab = context.new_page()
    tab.on("dialog", lambda dialog: dialog.accept())  # the confirm() of destructive actions
    yield tab
    context.close()


def shot(page: Page, name: str, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def wait_until(check: Callable[[], bool], seconds: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {seconds:.0f} s")
        time.sleep(0.25)


def log_in(page: Page, url: str, password: str = PASSWORD) -> None:
    page.goto(f"{url}/console/dashboard")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    page.fill("#f-username", USER)
    page.fill("#f-password", password)
    page.click("button[type=submit]")


def flash(page: Page) -> str:
    return page.locator(FLASH).first.inner_text()


FLEET = [
    inventory("WS-1", 5800, ["KB5890010"], [
        program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov"),
        program("Java 8 Update 431 (64-bit)", "8.0.4310.10", "Oracle Corporation")]),
    inventory("WS-2", 6000, ["KB5900110", "KB5900150"], [
        program("7-Zip 24.08", "24.08", "Igor Pavlov", "x86"),
        program("VLC media player", "3.0.20", "VideoLAN")]),
    inventory("WS-3", 6000, ["KB5900110", "KB5900150"], [
        program("Mozilla Firefox (x64 en-US)", "140.0", "Mozilla")]),
]


def test_an_administrators_day(world: dict[str, Any], page: Page, cli: Any) -> None:
    api: Api = world["api"]
    url = api.url

    # --- login: a wrong password is refused, the right one lands on the page asked for -----
    log_in(page, url, "not the password")
    expect(page.locator(".form-error")).to_contain_text("Wrong user name or password")
    shot(page, "01-login-refused")
    page.fill("#f-username", USER)
    page.fill("#f-password", PASSWORD)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{url}/console/dashboard")
    expect(page.locator("header nav a[aria-current=page]")).to_have_text("Dashboard")

    # --- Patch Management: add, sources, filters, schedule -----------------------------------
    page.click("header nav >> text=Patch Management")
    shot(page, "02-servers-empty")
    page.click("text=Add Patch Server")
    expect(page.locator("#f-port")).to_have_value("6201")
    page.fill("#f-name", "local")
    page.fill("#f-host", "bad host!")
    page.click("button:has-text('Add')")
    expect(page.locator("#err-host")).to_contain_text("Invalid host")
    shot(page, "03-server-add-error")
    page.fill("#f-host", "localhost")
    page.click("button:has-text('Add')")
    expect(page).to_have_url(f"{url}/console/servers/local/edit")
    expect(page.locator(FLASH)).to_contain_text("Added patch server local")

    page.fill("#f-msrc_source", str(MSRC_DIR))
    page.fill("#f-winget_source", str(WINGET_DIR))
    page.fill("#f-winget_packages", "\n".join(PACKAGES))
    expect(page.locator("#f-wsus_url")).to_be_hidden()  # shown only for the WSUS upstream
    page.check("input[name=upstream][value=wsus]")
    expect(page.locator("#f-wsus_url")).to_be_visible()
    page.check("input[name=upstream][value=microsoft]")
    # Settings, schedule and filters are one form: a rejected save keeps every edit.
    filters = page.locator("#filters")
    filters.locator("input[name=all_categories]").uncheck()
    filters.locator("input[name=categories][value='Security Updates']").check()
    filters.locator("input[name=categories][value='Applications']").check()
    filters.locator("input[name=all_languages]").uncheck()  # and no language ticked: an error
    expect(filters.locator("input[name=all_products]")).to_be_checked()
    page.check("#f-schedule_enabled")
    page.select_option("#f-weekday", "tuesday")
    page.fill("#f-at", "03:00")
    page.click("#save-server")
    expect(page.locator("#form-errors")).to_contain_text("Choose at least one language")
    expect(page.locator("#err-filter_languages")).to_contain_text("Choose at least one language")
    expect(page.locator("#f-msrc_source")).to_have_value(str(MSRC_DIR))
    expect(filters.locator("input[name=categories][value='Applications']")).to_be_checked()
    expect(filters.locator("input[name=categories][value='Drivers']")).not_to_be_checked()
    expect(page.locator("#f-at")).to_have_value("03:00")
    shot(page, "04-server-edit-error")
    filters.locator("input[name=languages][value='en-US']").check()
    page.click("#save-server")
    expect(page.locator(FLASH)).to_contain_text("Saved patch server local")
    expect(page.locator("[data-filter=categories]")).to_have_text(
        "Saved: Security Updates, Applications")
    expect(page.locator("[data-filter=languages]")).to_have_text("Saved: en-US")
    expect(page.locator("[data-filter=products]")).to_have_text("Saved: All")
    expect(page.locator("#schedule-now")).to_contain_text("weekly on tuesday at 03:00")
    # The schedule can be switched off again.
    page.uncheck("#f-schedule_enabled")
    page.click("#save-server")
    expect(page.locator("#schedule-now")).to_contain_text(
        "Saved: off (syncs run only when started)")
    page.check("#f-schedule_enabled")
    page.fill("#f-at", "03:00")
    page.click("#save-server")
    expect(page.locator("#schedule-now")).to_contain_text("weekly on tuesday at 03:00")

    # --- sync from the bundled sample catalog, watched live ----------------------------------
    page.click("#sync-status button:has-text('Start sync')")
    expect(page.locator(FLASH)).to_contain_text("Started the sync of local")
    expect(page.locator("#sync-status .badge")).to_have_text("Successful", timeout=90_000)
    expect(page.locator("#sync-status")).to_contain_text("21 patches")
    shot(page, "05-server-edit")
    page.reload()  # the product names the sync found are offered in the filters now
    expect(page.locator("#filters label:has-text('7-Zip')").first).to_be_attached()
    page.click("header nav >> text=Patch Management")
    row = page.locator("tr[data-server=local]")
    expect(row.locator(".badge")).to_have_text("Successful")
    expect(row).to_contain_text(re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"))
    page.click("a.sort:has-text('Host')")
    expect(page).to_have_url(re.compile(r"sort=host"))
    shot(page, "06-servers")
    _stop_and_delete(page, url)
    serve_sample_installers(world["vendor"], api.db_url, set())

    # --- endpoints: agents report, the admin scans two of them -------------------------------
    agents = [SimAgent(api, world["folder"] / doc["hostname"], doc,
                       "Berlin" if doc["hostname"] != "WS-3" else "Workstations")
              for doc in FLEET]
    try:
        for agent in agents:
            agent.runner.upload_inventory()
        _endpoints_and_scan(page, url)
        _policy(page, url)
        _install(page, url, agents)
        _report(page, url)
        _dashboard(page, url, cli)
    finally:
        for agent in agents:
            agent.stop()


def _stop_and_delete(page: Page, url: str) -> None:
    """A second patch server whose upstream answers slowly: Start sync, watch it run, Stop
    sync, then Delete it (the confirmation is accepted)."""
    with serve_files() as slow:
        docs = []
        for month in ("Jan", "Feb", "Mar", "Apr", "May", "Jun"):
            slow.files[f"/cvrf/v3.0/cvrf/2026-{month}"] = (MSRC_DIR / "2026-Sep.json").read_bytes()
            docs.append({"ID": f"2026-{month}", "CurrentReleaseDate": "2026-09-08T07:00:00Z",
                         "CvrfUrl": f"{slow.url}/cvrf/v3.0/cvrf/2026-{month}"})
        slow.files["/cvrf/v3.0/updates"] = json.dumps({"value": docs}).encode()
        slow.delay = 0.5
        page.goto(f"{url}/console/servers/new")
        page.fill("#f-name", "slow")
        page.fill("#f-host", "slow.corp.example")
        page.click("button:has-text('Add')")
        page.fill("#f-msrc_source", f"{slow.url}/cvrf/v3.0/")
        page.fill("#f-winget_source", "none")
        page.click("#save-server")
        expect(page.locator(FLASH)).to_contain_text("Saved patch server slow")
        page.goto(f"{url}/console/servers")
        row = page.locator("tr[data-server=slow]")
        row.locator("button:has-text('Start sync')").click()
        expect(row.locator(".badge")).to_have_text("Running", timeout=30_000)
        expect(row.locator(".msg")).to_contain_text("MSRC document", timeout=30_000)
        row.locator("button:has-text('Stop sync')").click()
        expect(page.locator(FLASH)).to_contain_text("Asked the sync of slow to stop")
        expect(row.locator(".badge")).to_have_text("Stopped", timeout=30_000)
        fetched = len([p for p, _ in slow.requests if "/cvrf/2026-" in p])
        assert fetched < 6
    row.locator("button:has-text('Delete')").click()
    expect(page.locator("h1")).to_have_text("Delete patch server slow?")
    page.click("#confirm-delete")
    expect(page.locator(FLASH)).to_contain_text("Deleted patch server slow")
    expect(page.locator("tr[data-server]")).to_have_count(1)


def _endpoints_and_scan(page: Page, url: str) -> None:
    page.click("header nav >> text=Endpoints")
    tree = page.locator("nav.tree")
    expect(tree).to_contain_text("Workstations")
    tree.locator("a:has-text('Berlin')").click()
    expect(page.locator("h1")).to_contain_text("in Berlin")
    expect(page.locator("#endpoint-rows tr")).to_have_count(2)
    page.click("nav.tree >> text=All endpoints")
    expect(page.locator("#endpoint-rows tr")).to_have_count(3)
    page.check("tr[data-endpoint=WS-1] input[name=endpoint]")
    page.check("tr[data-endpoint=WS-2] input[name=endpoint]")
    expect(page.locator("[data-count-of=endpoint]")).to_have_text("2 selected")
    page.click("#start-scan")
    expect(page.locator(FLASH)).to_contain_text("Started a patch scan of WS-1, WS-2")
    for host in ("WS-1", "WS-2", "WS-3"):
        expect(page.locator(f"tr[data-endpoint={host}] .scan-state")).to_contain_text(
            "Missing Patches", timeout=60_000)
    expect(page.locator("tr[data-endpoint=WS-1]")).to_contain_text("UTC")  # last seen
    shot(page, "07-endpoints")


def _policy(page: Page, url: str) -> None:
    page.click("header nav >> text=Policies")
    page.click("text=Add policy")
    page.fill("#f-name", "Workstation policy")
    page.select_option("#f-patch_server", "local")
    page.check("input[name=roaming_microsoft]")
    page.select_option("#f-scan_weekday", "wednesday")
    page.fill("#f-scan_every_weeks", "2")
    page.check("input[name=run_if_missed]")
    page.check("input[name=groups][value=Workstations]")
    # A time the browser's own time field would not let through, to see the server's error.
    page.evaluate("document.querySelector('#f-scan_at').type = 'text'")
    page.fill("#f-scan_at", "25:61")
    page.click("button:has-text('Add policy')")
    expect(page.locator("#err-scan_at")).to_contain_text("Invalid time")
    shot(page, "08-policy-error")
    page.evaluate("document.querySelector('#f-scan_at').type = 'text'")
    page.fill("#f-scan_at", "19:30")
    page.click("button:has-text('Add policy')")
    expect(page.locator(FLASH)).to_contain_text("Added policy Workstation policy")
    row = page.locator("tr[data-policy='Workstation policy']")
    expect(row).to_contain_text("Wednesday 19:30, every 2 weeks; runs if missed")
    expect(row).to_contain_text("Microsoft")
    shot(page, "09-policies")
    row.locator("a:has-text('Edit')").click()
    expect(page.locator("#f-scan_weekday")).to_have_value("wednesday")
    expect(page.locator("input[name=groups][value=Workstations]")).to_be_checked()
    page.uncheck("input[name=run_if_missed]")
    page.check("input[name=auto_install]")
    page.click("button:has-text('Save')")
    expect(page.locator(FLASH)).to_contain_text("Saved policy Workstation policy")
    expect(row).not_to_contain_text("runs if missed")
    expect(row.locator("td").nth(5)).to_have_text("Yes")


def _install(page: Page, url: str, agents: list[SimAgent]) -> None:
    page.click("header nav >> text=Patch Install")
    table = page.locator("#missing")
    expect(table.locator("tr[data-patch='7zip.7zip@25.01'] [data-affected]")).to_have_text("2")
    page.select_option("#f-category", "Applications")
    expect(page).to_have_url(re.compile(r"category=Applications"))
    expect(table.locator("tr[data-patch^=KB]")).to_have_count(0)
    page.select_option("#f-severity", "Critical")
    expect(page.locator(".empty")).to_contain_text("No missing patches")
    page.select_option("#f-severity", "")
    page.select_option("#f-eula", "Not Accepted")
    expect(table.locator("tbody tr")).to_have_count(1)
    page.select_option("#f-eula", "")
    page.select_option("#f-group", "Workstations")
    page.check("input[type=checkbox][name=subgroups]")
    expect(page).to_have_url(re.compile(r"subgroups=on"))
    expect(table.locator("tr[data-patch='7zip.7zip@25.01'] [data-affected]")).to_have_text("2")
    shot(page, "10-install-filtered")

    # Java needs its EULA: selecting it is allowed, installing it is refused until it is
    # accepted from the patch's details.
    table.locator("tr[data-patch^='Oracle.JavaRuntimeEnvironment'] td a").first.click()
    expect(page.locator("h1")).to_contain_text("Java")
    expect(page.locator("#endpoints")).to_contain_text("Selected: 0 of 1")
    page.click("#affected-button")
    page.locator("#endpoints-dialog input[data-check-all]").check()
    page.click("#apply")
    expect(page.locator("[data-selected-count]")).to_have_text("1")
    expect(page.locator("#async-message")).to_contain_text("needs its EULA accepted")
    page.click("header nav >> text=Patch Install")
    page.click("#start-install")
    expect(page.locator("p.flash[role=alert]")).to_contain_text("its EULA is not accepted")
    expect(page).to_have_url(f"{url}/console/install")
    page.locator("#missing tr[data-patch^='Oracle.JavaRuntimeEnvironment'] td a").first.click()
    page.click("button:has-text('Accept EULA')")
    expect(page.locator(FLASH)).to_contain_text("Accepted the EULA")
    expect(page.locator(".card:has(h2:text('EULA'))")).to_contain_text(f"Accepted by {USER}")

    # 7-Zip: choose one of the two endpoints, then both.
    page.goto(f"{url}/console/install")
    page.locator("#missing tr[data-patch='7zip.7zip@25.01'] [data-affected]").click()
    dialog = page.locator("#endpoints-dialog")
    expect(dialog).to_be_visible()  # the count opens the dialog directly
    dialog.locator("input[name=endpoint][value=WS-1]").check()
    expect(dialog.locator("[data-count-of=endpoint]")).to_have_text("1 ticked")
    shot(page, "11-endpoints-dialog", full_page=False)
    dialog.locator("#apply").click()
    expect(dialog).to_be_hidden()
    expect(page.locator("[data-selected-count]")).to_have_text("1")
    expect(page.locator("#async-message")).to_contain_text("1 of 2 endpoints selected")
    shot(page, "12-patch-details")

    # Refresh clears the selection.
    page.goto(f"{url}/console/install")
    expect(page.locator("#selected-total")).to_have_text("2")
    page.click("#refresh")
    expect(page.locator(FLASH)).to_contain_text("Cleared the selection (2 pairs)")
    expect(page.locator("#selected-total")).to_have_text("0")
    expect(page.locator("#start-install")).to_be_disabled()

    for patch, tick in (("7zip.7zip@25.01", "input[data-check-all]"),
                        ("KB5900110", "#all-affected")):
        page.goto(f"{url}/console/install")
        page.locator(f"#missing tr[data-patch='{patch}'] [data-affected]").click()
        page.locator(f"#endpoints-dialog {tick}").check()
        page.locator("#endpoints-dialog #apply").click()
        expect(page.locator("#endpoints-dialog")).to_be_hidden()
    page.goto(f"{url}/console/install")
    expect(page.locator("#missing tr[data-patch='7zip.7zip@25.01'] [data-selected]")
           ).to_have_text("2")
    expect(page.locator("#selected-total")).to_have_text("3")
    page.check("#allow-restart")
    page.click("#start-install")
    expect(page).to_have_url(re.compile(r"/console/jobs/\d+$"))
    expect(page.locator(FLASH)).to_contain_text("Started install job")
    job_url = page.url
    # No agent is polling yet: the items wait, dispatched, and the page shows it live.
    expect(page.locator("#job-live")).to_have_attribute("data-running", "true")
    expect(page.locator("[data-count=dispatched]")).to_have_text("3", timeout=60_000)
    expect(page.locator("#job-items [data-state=dispatched]")).to_have_count(3)
    page.click("header nav >> text=Dashboard")
    expect(page.locator("ul.running")).to_contain_text(
        f"Install job {job_url.rsplit('/', 1)[1]}")
    shot(page, "13-dashboard-running-job")
    page.goto(job_url)
    for agent in agents:
        agent.start()
    # The page refreshes itself until the job is done.
    expect(page.locator("#job-live .badge").first).to_have_text("Succeeded", timeout=90_000)
    expect(page.locator("#job-live")).to_have_attribute("data-running", "false")
    expect(page.locator("button:has-text('Cancel job')")).to_have_count(0)
    expect(page.locator("#job-items tbody tr")).to_have_count(3)
    expect(page.locator("[data-count=succeeded]")).to_have_text("3")
    expect(page.locator("#job-summary")).to_contain_text("3 succeeded")
    shot(page, "14-job")
    page.click("header nav >> text=Jobs")
    expect(page.locator("#job-rows tr").first).to_contain_text("3 succeeded")
    shot(page, "15-jobs")


def _report(page: Page, url: str) -> None:
    page.click("header nav >> text=Reports")
    page.locator("#report-form input[name=kinds][value=installed]").uncheck()
    page.locator("#report-form input[name=kinds][value=compliance]").uncheck()
    page.evaluate("document.querySelector('#f-since').type = 'text'")
    page.fill("#f-since", "yesterday")
    page.click("#generate")
    expect(page.locator("#err-since")).to_contain_text("use YYYY-MM-DD")
    page.evaluate("document.querySelector('#f-since').type = 'text'")
    page.fill("#f-since", "")
    page.click("#generate")
    expect(page.locator(FLASH)).to_contain_text("Generating the report")
    row = page.locator("#report-runs tbody tr").first
    expect(row).to_contain_text("missing,patches", timeout=90_000)
    expect(row.locator(".badge")).to_have_text("Successful")
    shot(page, "16-reports")
    with page.expect_download() as download:
        row.locator("a.csv").first.click()
    saved = download.value
    rows = list(csv.reader(io.StringIO(Path(saved.path()).read_text(encoding="utf-8"))))
    assert saved.suggested_filename.endswith(".csv")
    assert len(rows) >= 2 and len(rows[0]) > 3
    with page.context.expect_page() as opened:
        row.locator("a.open-html").click()
    report = opened.value
    report.wait_for_load_state()
    assert "/console/reports/" in report.url and report.url.endswith("/index.html")
    report.locator("a[href$='.html']").first.click()
    link = report.locator("a[href*='/console/patches/']").first
    href = link.get_attribute("href") or ""
    assert re.fullmatch(rf"{re.escape(url)}/console/patches/\d+", href), href
    shot(report, "17-report-html")
    link.click()
    expect(report.locator("h1")).not_to_be_empty()
    expect(report.locator("#endpoints")).to_contain_text("Endpoints affected")
    report.close()


def _dashboard(page: Page, url: str, cli: Any) -> None:
    page.click("header nav >> text=Dashboard")
    result = cli("dashboard", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    sev = {bar.get_attribute("data-label"): int(bar.get_attribute("data-value") or -1)
           for bar in page.locator("[data-chart=severity] g.bar").all()}
    assert sev == {s: c["patches"] for s, c in data["missing_by_severity"].items()}
    pairs = {bar.get_attribute("data-label"): int(bar.get_attribute("data-value") or -1)
             for bar in page.locator("[data-chart=pairs] g.bar").all()}
    assert pairs == {s: c["pairs"] for s, c in data["missing_by_severity"].items()}
    overview = {bar.get_attribute("data-label"): int(bar.get_attribute("data-value") or -1)
                for bar in page.locator("[data-chart=overview] g.bar").all()}
    assert overview == {"Missing Patches": data["scan_overview"]["missing_patches"],
                        "Not Scanned": data["scan_overview"]["not_scanned"],
                        "Up-to-Date": data["scan_overview"]["up_to_date"]}
    assert sum(overview.values()) == data["endpoints"] == 3
    assert sum(sev.values()) > 0
    expect(page.locator("[data-figure=endpoints]")).to_have_text("3")
    expect(page.locator("section:has(h2:text('Last sync per patch server'))")).to_contain_text(
        "Successful")
    shot(page, "18-dashboard")
    page.set_viewport_size({"width": 1600, "height": 1000})
    shot(page, "19-dashboard-wide")
    page.set_viewport_size({"width": 1024, "height": 768})

    # Log out: the console is closed again.
    page.click("header button:has-text('Log out')")
    expect(page).to_have_url(f"{url}/console/login")
    page.goto(f"{url}/console/jobs")
    expect(page).to_have_url(re.compile(r"/console/login\?next=%2Fconsole%2Fjobs"))
