"""The console's administrator pages in a real browser (Debian's Chromium, headless, Playwright)
against the real HTTPS server on loopback: what a browser-only administrator needs beyond the
daily walk of test_console_browser.py.

The world is written straight into the database (tests/fixtures/install/world.py: a patch
server, three patches, three endpoints missing them) so the checks are about the pages, not
about syncing: job outcomes and Retry, the dashboard's labelled tiles and a partly failed sync,
groups (add, rename, nest, delete, move endpoints), one endpoint's page (Install selected, Scan
now), the endpoints filters, administrators and the audit log (also `patchflow audit list`),
backup and restore, and the form fixes (favicon, number attributes, web wording). Install
flows are not run: the launcher is replaced by a recorder, the job rows are set as an agent's
results would set them. Screenshots at 1280×900 and 1024×768 go to test-artifacts/console/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.agent.harness import running_api
from tests.fixtures.browser import (  # noqa: F401 (chromium: the `browser` fixture)
    ARTIFACTS,
    FLASH,
    PASSWORD,
    USER,
    chromium,
    logged_in_tab,
    require_chromium,
)
from tests.fixtures.browser import shots as browser_shots

ERROR = "p.flash[role=alert]"

require_chromium()

from playwright.sync_api import Browser, Page, expect  # noqa: E402

pytestmark = pytest.mark.usefixtures("prefect")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, prefect: None) -> Iterator[dict[str, Any]]:
    from sqlalchemy import select, update

    from models import Endpoint, InstallJob, InstallJobItem, PatchServer
    from models.base import utcnow
    from models.db import session_scope
    from patchflow.install import create_job, launch
    from patchflow.ops import accounts
    from tests.fixtures.install import world as install_world

    launched: list[int] = []
    original = launch.LAUNCHER[0]
    launch.LAUNCHER[0] = lambda job_id: launched.append(job_id) or os.getpid()
    folder = tmp_path_factory.mktemp("console-admin")
    with running_api("sqlite", folder) as api:
        with session_scope(api.db_url) as session:
            accounts.add_admin(session, USER, PASSWORD)
            built = install_world.build(session)
            ep = built.endpoints
            now = utcnow()
            session.execute(update(Endpoint).where(Endpoint.id == ep["WS-1"]).values(
                agent_id="agent-1", last_seen=now, scan_state_at=now))
            session.execute(update(Endpoint).where(Endpoint.id == ep["WS-3"]).values(
                agent_id="agent-3", last_seen=now - dt.timedelta(hours=2)))
            session.execute(update(PatchServer).values(
                sync_status="Failed", sync_status_at=now,
                sync_message="3 documents failed (HTTP 503 from the upstream); "
                             "6 documents stored (40 patches), 2 unchanged"))
            kb, zip_ = built.patches["kb"], built.patches["7zip"]
            jobs = {}
            for name, states in (("failed", ["failed", "failed"]),
                                 ("partial", ["succeeded", "failed"]),
                                 ("good", ["succeeded", "reboot pending"])):
                job = create_job(session, [(kb, ep["WS-1"]), (zip_, ep["WS-2"])], USER)
                items = session.scalars(select(InstallJobItem.id).where(
                    InstallJobItem.job_id == job.id).order_by(InstallJobItem.id)).all()
                for item, state in zip(items, states, strict=True):
                    session.execute(update(InstallJobItem).where(InstallJobItem.id == item)
                                    .values(state=state, exit_code=1603 if state == "failed"
                                            else 0, finished_at=now))
                session.execute(update(InstallJob).where(InstallJob.id == job.id)
                                .values(status="done", finished_at=now))
                jobs[name] = job.id
        try:
            yield {"api": api, "jobs": jobs, "launched": launched, "folder": folder}
        finally:
            launch.LAUNCHER[0] = original


@pytest.fixture(scope="module")
def page(browser: Browser, world: dict[str, Any]) -> Iterator[Page]:
    with logged_in_tab(browser, world["api"].url, accept_downloads=True) as tab:
        yield tab


def shots(page: Page, name: str) -> None:
    browser_shots(page, f"admin-{name}")


def test_jobs_show_outcomes_and_retry_failed_items(world: dict[str, Any], page: Page) -> None:
    url, jobs = world["api"].url, world["jobs"]
    page.goto(f"{url}/console/jobs")
    for name, outcome in (("failed", "Failed"), ("partial", "Partially succeeded"),
                          ("good", "Succeeded")):
        row = page.locator(f"tr[data-job='{jobs[name]}']")
        expect(row.locator(".badge")).to_have_text(outcome)
    expect(page.locator(f"tr[data-job='{jobs['failed']}']")).to_contain_text("2 failed")
    expect(page.locator(".badge", has_text="done")).to_have_count(0)
    shots(page, "jobs")

    page.goto(f"{url}/console/jobs/{jobs['good']}")
    expect(page.locator("#job-live .badge").first).to_have_text("Succeeded")
    expect(page.locator("button:has-text('Retry failed items')")).to_have_count(0)

    page.goto(f"{url}/console/jobs/{jobs['partial']}")
    expect(page.locator("#job-live .badge").first).to_have_text("Partially succeeded")
    expect(page.locator("[data-count=failed]")).to_have_text("1")
    expect(page.locator("[data-count=succeeded]")).to_have_text("1")
    shots(page, "job-partial")
    page.click("button:has-text('Retry failed items (1)')")
    expect(page).to_have_url(re.compile(r"/console/jobs/\d+$"))
    expect(page.locator(FLASH)).to_contain_text(
        f"to retry 1 failed item of job {jobs['partial']}")
    new_job = int(page.url.rsplit("/", 1)[1])
    assert world["launched"] == [new_job]
    expect(page.locator("#job-items tbody tr")).to_have_count(1)
    expect(page.locator("#job-items")).to_contain_text("WS-2")
    expect(page.locator("#job-live .badge").first).to_have_text("Running")
    # A running job has nothing to retry yet; its page offers Cancel instead.
    expect(page.locator("button:has-text('Cancel job')")).to_have_count(1)


def test_dashboard_tiles_and_partial_sync(world: dict[str, Any], page: Page) -> None:
    url = world["api"].url
    page.goto(f"{url}/console/dashboard")
    tiles = page.locator("dl.figures dt")
    expect(tiles).to_have_text(["Endpoints", "Endpoints with missing patches",
                                "Endpoints up to date", "Endpoints not scanned"])
    expect(page.locator("[data-figure=missing_patches]")).to_have_text("3")
    sync = page.locator("section:has(h2:text('Last sync per patch server'))")
    expect(sync.locator(".badge")).to_have_text("Partially successful")
    expect(sync.locator("[data-sync-counts]")).to_have_text("6 documents stored, 3 failed")
    shots(page, "dashboard")
    page.goto(f"{url}/console/servers")
    expect(page.locator("tr[data-server=local] .badge")).to_have_text("Partially successful")
    # The browser asks for /favicon.ico on every page; it is there.
    icon = page.request.get(f"{url}/favicon.ico")
    assert icon.status == 200 and b"<svg" in icon.body()


def test_groups_and_moving_endpoints(world: dict[str, Any], page: Page) -> None:
    url = world["api"].url
    page.goto(f"{url}/console/endpoints")
    page.click("text=Manage groups")
    expect(page).to_have_url(f"{url}/console/groups")
    page.fill("#f-new-name", "Berlin")
    page.click("#add-group button")
    expect(page.locator(FLASH)).to_have_text("Added group Berlin.")
    page.fill("#f-new-name", "Berlin")
    page.click("#add-group button")
    expect(page.locator(ERROR)).to_have_text("A group named 'Berlin' already exists")
    page.fill("#f-new-name", "Servers")
    page.click("#add-group button")
    # Rename Berlin and nest it under Office in one save.
    row = page.locator("tr[data-group=Berlin]")
    row.locator("input[name=name]").fill("Berlin-Office")
    row.locator("select[name=parent]").select_option("Office")
    row.locator("button:has-text('Save')").click()
    expect(page.locator(FLASH)).to_have_text("Saved group Berlin-Office.")
    expect(page.locator("tr[data-group=Berlin-Office] td").first).to_have_text(
        "Office/Berlin-Office")
    # A group cannot go under its own subgroup.
    office = page.locator("tr[data-group=Office]")
    office.locator("select[name=parent]").select_option("Berlin-Office")
    office.locator("button:has-text('Save')").click()
    expect(page.locator(ERROR)).to_contain_text("one of its subgroups")
    shots(page, "groups")

    # Move two endpoints at once from the Endpoints page.
    page.goto(f"{url}/console/endpoints")
    page.check("tr[data-endpoint=WS-1] input[name=endpoint]")
    page.check("tr[data-endpoint=WS-2] input[name=endpoint]")
    page.select_option("#f-move_to", "Berlin-Office")
    page.click("#move-endpoints")
    expect(page.locator(FLASH)).to_have_text("Moved 2 endpoints to Berlin-Office.")
    expect(page.locator("tr[data-endpoint=WS-1] td").nth(2)).to_have_text(
        "Office/Berlin-Office")
    page.locator("nav.tree a:has-text('Berlin-Office')").click()
    expect(page.locator("#endpoint-rows tr")).to_have_count(2)
    # Deleting the group moves its endpoints up to Office; Servers (empty) just goes.
    page.goto(f"{url}/console/groups")
    page.locator("tr[data-group=Berlin-Office] button:has-text('Delete')").click()
    expect(page.locator(FLASH)).to_have_text(
        "Deleted group Berlin-Office; 2 endpoints moved to its parent.")
    page.locator("tr[data-group=Servers] button:has-text('Delete')").click()
    expect(page.locator("tr[data-group]")).to_have_count(1)


def test_endpoints_filters_and_one_endpoint(world: dict[str, Any], page: Page) -> None:
    url = world["api"].url
    page.goto(f"{url}/console/endpoints")
    ws1 = page.locator("tr[data-endpoint=WS-1]")
    expect(ws1.locator("[data-missing]")).to_have_text("3")
    expect(ws1.locator("[data-scanned]")).to_contain_text("UTC")
    expect(ws1.locator("[data-presence]")).to_have_text("Online")
    expect(page.locator("tr[data-endpoint=WS-3] [data-presence]")).to_have_text("Offline")
    expect(page.locator("tr[data-endpoint=WS-2] [data-presence]")).to_have_text("No agent")
    page.select_option("#f-presence", "offline")  # the filters apply on change
    expect(page).to_have_url(re.compile(r"presence=offline"))
    expect(page.locator("#endpoint-rows tr")).to_have_count(1)
    expect(page.locator("#endpoint-rows tr")).to_have_attribute("data-endpoint", "WS-3")
    page.select_option("#f-presence", "")
    page.select_option("#f-state", "Up-to-Date")
    expect(page.locator(".empty")).to_contain_text("matching the filters")
    page.select_option("#f-state", "Missing Patches")
    expect(page.locator("#endpoint-rows tr")).to_have_count(3)
    shots(page, "endpoints")
    bad = page.request.get(f"{url}/console/endpoints?state=nonsense")
    assert bad.status == 400 and "Unknown scan state" in bad.text()

    page.click("tr[data-endpoint=WS-1] a:has-text('WS-1')")
    expect(page.locator("h1")).to_contain_text("WS-1")
    facts = page.locator("#facts")
    expect(facts.locator("[data-fact=os]")).to_contain_text("Windows 11 Pro")
    expect(facts.locator("[data-fact=build]")).to_have_text("22631.5800")
    expect(facts.locator("[data-fact=presence]")).to_contain_text("Online")
    expect(facts.locator("[data-fact=presence]")).to_contain_text("polls every 60 s")
    expect(facts.locator("[data-fact=group]")).to_have_text("Office")
    expect(facts.locator("[data-fact=policy]")).to_have_text("Office")
    missing = page.locator("#missing")
    expect(missing.locator("tbody tr")).to_have_count(3)
    expect(missing.locator("tr[data-patch=KB5900110]")).to_contain_text("Critical")
    expect(missing.locator("tr[data-patch=KB5900110]")).to_contain_text("build < fixed")
    expect(page.locator("#installs")).to_contain_text("Install job")  # the seeded jobs
    shots(page, "endpoint")
    page.click("#install-selected")  # nothing ticked
    expect(page.locator(ERROR)).to_have_text("Tick the missing patches to install first")
    missing.locator("tr[data-patch=KB5900110] input[name=patch]").check()
    missing.locator("tr[data-patch='7zip.7zip'] input[name=patch]").check()
    expect(page.locator("[data-count-of=patch]")).to_have_text("2 selected")
    page.click("#install-selected")
    expect(page).to_have_url(re.compile(r"/console/jobs/\d+$"))
    expect(page.locator(FLASH)).to_contain_text("(2 patches on WS-1)")
    expect(page.locator("#job-items tbody tr")).to_have_count(2)
    page.go_back()
    page.goto(f"{url}/console/endpoints/WS-1")
    page.click("#scan-now")
    expect(page.locator(FLASH)).to_contain_text("Started a patch scan of WS-1")
    expect(page).to_have_url(f"{url}/console/endpoints/WS-1")
    from server.console import runs

    deadline = time.monotonic() + 60
    while any(r.running for r in runs.runs("scan:")):  # the later tests back up the data
        assert time.monotonic() < deadline, "the scan did not finish"
        time.sleep(0.2)


def test_administrators_and_audit_log(world: dict[str, Any], page: Page, cli: Any) -> None:
    page.click("header nav >> text=Admin")
    form = page.locator("#add-admin")
    form.locator("#f-username").fill("bob")
    form.locator("#f-password").fill("a long enough password")
    form.locator("#f-password_again").fill("another password!")
    form.locator("button").click()
    expect(page.locator("#err-password")).to_contain_text("The two passwords differ")
    expect(form.locator("#f-username")).to_have_value("bob")  # what was typed stays
    form.locator("#f-password").fill("a long enough password")
    form.locator("#f-password_again").fill("a long enough password")
    form.locator("button").click()
    expect(page.locator(FLASH)).to_have_text("Added administrator bob.")
    bob = page.locator("tr[data-admin=bob]")
    bob.locator("input[name=password]").fill("bob's new password")
    bob.locator("input[name=password_again]").fill("bob's new password")
    bob.locator("button:has-text('Change password')").click()
    expect(page.locator(FLASH)).to_contain_text("Changed the password of bob")
    expect(page.locator("tr[data-admin=alice] button:has-text('Remove')")).to_have_count(0)
    shots(page, "admin")
    page.locator("tr[data-admin=bob] button:has-text('Remove')").click()
    expect(page.locator(FLASH)).to_have_text("Removed administrator bob.")

    page.click("text=Audit log")
    audit = page.locator("#audit")
    for action in ("login", "admin.add", "admin.password", "admin.remove", "install.retry",
                   "install.start", "group.add", "group.edit", "group.delete",
                   "endpoints.move"):
        expect(audit.locator(f"tr[data-action='{action}']").first).to_be_visible()
    expect(audit.locator("tr").nth(1)).to_contain_text("admin.remove")
    page.fill("#f-action", "group.")
    page.click("#audit-filters button")
    expect(audit.locator("tbody tr")).to_have_count(5)  # refused changes leave no line
    shots(page, "audit")

    result = cli("audit", "list", "--json", "--action", "admin.")
    assert result.code == 0, result.err
    events = json.loads(result.out)
    assert [(e["action"], e["target"], e["actor"], e["source"]) for e in events] == [
        ("admin.remove", "bob", USER, "console"), ("admin.password", "bob", USER, "console"),
        ("admin.add", "bob", USER, "console")]
    result = cli("audit", "list")
    assert result.code == 0 and "login" in result.out and "alice" in result.out
    result = cli("audit", "list", "--limit", "0")
    assert result.code == 2 and "between 1 and" in result.err


def test_backup_create_download_and_restore(world: dict[str, Any], page: Page,
                                            tmp_path: Path) -> None:
    url = world["api"].url
    page.goto(f"{url}/console/admin/backup")
    page.click("#create")
    expect(page.locator(FLASH)).to_contain_text("Created backup patchflow-")
    row = page.locator("#backups tbody tr").first
    with page.expect_download() as download:
        row.locator("a:has-text('Download')").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.suffix == ".exp" and saved.stat().st_size > 1000
    shots(page, "backup")

    # A damaged file is refused before it is kept.
    damaged = tmp_path / "damaged.exp"
    damaged.write_bytes(saved.read_bytes()[:-200])
    page.set_input_files("#f-archive", str(damaged))
    page.click("#upload")
    expect(page.locator(ERROR)).to_contain_text("damaged")
    expect(page.locator("#backups tbody tr")).to_have_count(1)

    # Change something, then restore the backup: the change is gone.
    page.goto(f"{url}/console/groups")
    page.fill("#f-new-name", "Made-after-the-backup")
    page.click("#add-group button")
    expect(page.locator("tr[data-group=Made-after-the-backup]")).to_have_count(1)
    page.goto(f"{url}/console/admin/backup")
    page.set_input_files("#f-archive", str(saved))
    page.click("#upload")
    expect(page.locator(FLASH)).to_contain_text("its checks passed")
    expect(page.locator("h1")).to_contain_text("Restore uploaded-")
    expect(page.locator(".question")).to_contain_text("replaces every piece of data")
    from models.migrate import head_revision

    expect(page.locator("#manifest")).to_contain_text(str(head_revision()))
    shots(page, "restore-confirm")
    page.click("#restore")
    expect(page.locator(FLASH)).to_contain_text("Restored uploaded-")
    page.goto(f"{url}/console/groups")
    expect(page.locator("tr[data-group=Made-after-the-backup]")).to_have_count(0)
    page.goto(f"{url}/console/admin/audit?action=backup.")
    expect(page.locator("#audit tr[data-action='backup.restore']")).to_have_count(1)


def test_forms_speak_the_browsers_language(world: dict[str, Any], page: Page) -> None:
    url = world["api"].url
    page.goto(f"{url}/console/servers/local/edit")
    port = page.locator("#f-port")
    assert port.get_attribute("min") == "1" and port.get_attribute("max") == "65535"
    shots(page, "server-edit")
    page.goto(f"{url}/console/policies/new")
    expect(page.locator("#f-scan_every_weeks")).to_have_attribute("max", "52")
    # The roaming note of the guide is where automatic install is set.
    expect(page.locator("#roaming-note")).to_contain_text(
        "Automatic install is not for roaming endpoints")

    # Reports: unticking every kind is an error, not "build them all".
    page.goto(f"{url}/console/reports")
    for box in page.locator("#report-form input[name=kinds]").all():
        box.uncheck()
    page.click("#generate")
    expect(page.locator("#err-kinds")).to_have_text("Choose at least one report kind")

    # Install list: tick two patches, one job for every affected endpoint in the group.
    page.goto(f"{url}/console/install?group=Office")
    page.click("#install-ticked")
    expect(page.locator(ERROR)).to_have_text("Tick the patches to install first")
    page.goto(f"{url}/console/install?group=Office")
    page.check("#missing tr[data-patch=KB5900110] input[name=patch]")
    page.check("#missing tr[data-patch='7zip.7zip@25.01'] input[name=patch]")
    expect(page.locator("[data-count-of=patch]")).to_have_text("2 ticked")
    shots(page, "install-ticked")
    page.click("#install-ticked")
    expect(page).to_have_url(re.compile(r"/console/jobs/\d+$"))
    expect(page.locator(FLASH)).to_contain_text(re.compile(
        r"Started install job \d+: 2 patches on [23] endpoints \(\d items\)"))
    expect(page.locator("#job-items tbody tr")).to_have_count(int(re.findall(
        r"\((\d) items", page.locator(FLASH).inner_text())[0]))

    # Deleting a patch server that a policy uses names the policy; with nowhere to move it
    # the delete is not offered; with another server the policy moves there.
    page.goto(f"{url}/console/servers")
    page.locator("tr[data-server=local] button:has-text('Delete')").click()
    expect(page.locator("#used-by")).to_contain_text("Policy Office gets its patches from local")
    expect(page.locator("#used-by")).to_contain_text("no other patch server")
    expect(page.locator("#confirm-delete")).to_have_count(0)
    page.goto(f"{url}/console/servers/new")
    page.fill("#f-name", "spare")
    page.fill("#f-host", "spare.corp.example")
    page.click("button:has-text('Add')")
    page.goto(f"{url}/console/servers")
    page.locator("tr[data-server=local] button:has-text('Delete')").click()
    page.select_option("#f-reassign_to", "spare")
    shots(page, "server-delete")
    page.click("#confirm-delete")
    expect(page.locator(FLASH)).to_have_text(
        "Deleted patch server local; moved 1 policy (Office) to spare.")
    page.goto(f"{url}/console/policies")
    expect(page.locator("tr[data-policy=Office] td").nth(1)).to_have_text("spare")
