"""The patch-cycle pages in a real browser (Debian's Chromium, headless, Playwright) against the
real HTTPS server on loopback, as a browser-only administrator uses them: approve a patch for a
group with a deadline and withdraw it, decline and undecline a patch, add an automatic approval
rule (after a refused one) and preview what it approves, build a policy's rings (add, edit,
reorder, delete), and start a dry run of the cycle and read its steps and plan.

The world is written straight into the database (tests/fixtures/install/world.py) with its
patch server freshly synced, so the dry run's sync step is skipped and its scan finds no agent
to ask: the run is a real `patchflow cycle run --dry-run` in its own process, reported on the
run's page. Screenshots at 1280×900 and 1024×768 go to test-artifacts/console/.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
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
    from sqlalchemy import update

    from models import Group, PatchServer
    from models.base import utcnow
    from models.db import session_scope
    from patchflow.ops import accounts
    from tests.fixtures.install import world as install_world

    folder = tmp_path_factory.mktemp("console-cycle")
    with running_api("sqlite", folder) as api:
        with session_scope(api.db_url) as session:
            accounts.add_admin(session, USER, PASSWORD)
            built = install_world.build(session)
            session.add_all([Group(name="Pilot", policy_id=built.policy),
                             Group(name="Servers", policy_id=built.policy)])
            session.execute(update(PatchServer).values(sync_status="Successful",
                                                       sync_status_at=utcnow(),
                                                       sync_finished_at=utcnow()))
        yield {"api": api, "patches": built.patches}


@pytest.fixture(scope="module")
def page(browser: Browser, world: dict[str, Any]) -> Iterator[Page]:
    with logged_in_tab(browser, world["api"].url) as tab:
        yield tab


def shots(page: Page, name: str) -> None:
    browser_shots(page, f"cycle-{name}")


def test_approve_unapprove_decline_undecline(world: dict[str, Any], page: Page) -> None:
    url = world["api"].url
    page.goto(f"{url}/console/dashboard")
    page.click("nav >> text=Approvals")
    expect(page).to_have_url(f"{url}/console/approvals")
    form = page.locator("#approve-form")
    # Forgetting the group: the page says so at the top and at the field, the patch stays.
    form.locator("#f-patch").fill("KB5900110")
    form.locator("button:has-text('Approve')").click()
    expect(page.locator("#form-error")).to_have_text("Nothing was saved: Tick at least one group.")
    expect(page.locator("#f-groups .field-error")).to_have_text("Tick at least one group.")
    expect(page.locator("#f-patch")).to_have_value("KB5900110")
    shots(page, "approvals-error")
    form.locator("label:has-text('Office') input").check()
    form.locator("#f-deadline").fill("2099-12-31")
    form.locator("button:has-text('Approve')").click()
    expect(page.locator(FLASH)).to_have_text(
        "Approved KB5900110 for Office, install by 2099-12-31.")
    row = page.locator("#approvals tr[data-patch=KB5900110]")
    expect(row).to_contain_text("approved by alice on")
    expect(row).to_contain_text("2099-12-31")

    decline = page.locator("#decline-form")
    decline.locator("#f-decline_patch").fill("7zip.7zip@25.01")
    decline.locator("#f-reason").fill("breaks the <ERP> add-in")
    decline.locator("button:has-text('Decline')").click()
    expect(page.locator(FLASH)).to_have_text("Declined 7zip.7zip@25.01.")
    expect(page.locator("#declines tr[data-patch='7zip.7zip@25.01']")).to_contain_text(
        "declined by alice: breaks the <ERP> add-in")
    shots(page, "approvals")
    # One group's approvals (choosing it reloads the list).
    page.select_option("#f-filter-group", "Pilot")
    expect(page).to_have_url(f"{url}/console/approvals?group=Pilot")
    expect(page.locator("p.empty").first).to_have_text("No manual approval for Pilot.")
    page.select_option("#f-filter-group", "Office")
    expect(page.locator("#approvals tr[data-patch=KB5900110]")).to_have_count(1)
    page.goto(f"{url}/console/approvals")

    # One patch's approvals: its own page, the forms filled in for it; from the list and
    # from the patch's page.
    row.locator("a", has_text="KB5900110").click()
    expect(page.locator("h1")).to_have_text("Approvals of KB5900110")
    page.goto(f"{url}/console/patches/{world['patches']['kb']}")
    page.click("a[data-approvals]")
    expect(page.locator("h1")).to_have_text("Approvals of KB5900110")
    expect(page.locator("#declines")).to_have_count(0)
    expect(page.locator("#f-decline_patch")).to_have_value("KB5900110")
    shots(page, "approvals-patch")
    page.locator("#approvals tr[data-patch=KB5900110] button:has-text('Unapprove')").click()
    expect(page.locator(FLASH)).to_have_text("Withdrew the approval of KB5900110 for Office.")
    expect(page.locator("h1")).to_have_text("Approvals of KB5900110")
    expect(page.locator("#approvals")).to_have_count(0)

    page.goto(f"{url}/console/approvals")
    page.locator("#declines button:has-text('Undecline')").click()
    expect(page.locator(FLASH)).to_have_text("7zip.7zip@25.01 is offered again.")
    expect(page.locator("#declines")).to_have_count(0)


def test_rules_add_preview_delete(world: dict[str, Any], page: Page) -> None:
    url = world["api"].url
    page.goto(f"{url}/console/approvals")
    page.click("text=Automatic approval rules")
    expect(page).to_have_url(f"{url}/console/rules")
    page.fill("#f-name", "critical security")
    page.locator("#rule-form label:has-text('Office') input").check()
    page.locator("#f-severity label:has-text('Critical') input").check()
    page.locator("#f-category label:has-text('Security Updates') input").check()
    page.fill("#f-deadline_days", "7")
    page.click("#rule-form button:has-text('Add rule')")
    expect(page.locator("#err-name")).to_contain_text("Invalid rule name 'critical security'")
    expect(page.locator("#rule-error")).to_contain_text(
        "The rule was not added: Invalid rule name 'critical security'")
    # What was ticked is still ticked.
    expect(page.locator("#f-severity label:has-text('Critical') input")).to_be_checked()
    expect(page.locator("#f-deadline_days")).to_have_value("7")
    shots(page, "rule-error")
    page.fill("#f-name", "critical-security")
    page.click("#rule-form button:has-text('Add rule')")
    expect(page.locator(FLASH)).to_contain_text("Added rule critical-security")
    rule = page.locator("tr[data-rule=critical-security]")
    expect(rule).to_contain_text("Severity Critical; Category Security Updates")
    expect(rule).to_contain_text("7 days after approval")
    shots(page, "rules")
    rule.locator("a:has-text('Preview')").click()
    expect(page.locator("h1")).to_have_text("Rule critical-security")
    hit = page.locator("#preview tr[data-patch=KB5900110]")
    expect(hit).to_contain_text("rule 'critical-security': Critical, Security Updates")
    expect(hit).to_contain_text("3 endpoints")
    expect(page.locator("#preview tbody tr")).to_have_count(1)
    shots(page, "rule-preview")
    page.click("button:has-text('Delete rule')")
    expect(page.locator(FLASH)).to_have_text("Deleted rule critical-security.")
    expect(page).to_have_url(f"{url}/console/rules")


def test_rings_on_the_policy_page(world: dict[str, Any], page: Page) -> None:
    url = world["api"].url
    page.goto(f"{url}/console/policies")
    page.click("#policies a:has-text('Office')")
    rings = page.locator("#rings")
    expect(rings.locator(".empty")).to_contain_text("No rings")
    add = page.locator("#add-ring-form")
    add.locator("#new-ring-name").fill("pilot")
    add.locator("label:has-text('Pilot') input").check()
    add.locator("button:has-text('Add ring')").click()
    expect(page.locator(FLASH)).to_have_text("Added ring pilot.")
    # A second ring with the same name: refused at the top and at the name, as typed.
    page.locator("#add-ring summary").click()
    add.locator("#new-ring-name").fill("pilot")
    add.locator("label:has-text('Servers') input").check()
    add.locator("button:has-text('Add ring')").click()
    expect(page.locator("#ring-error")).to_contain_text("The ring was not saved")
    expect(page.locator("#err-new-ring-name")).to_have_text(
        "Policy Office already has a ring named 'pilot'")
    expect(page.locator("#new-ring-name")).to_have_value("pilot")
    expect(add.locator("label:has-text('Servers') input")).to_be_checked()
    shots(page, "ring-error")
    add.locator("#new-ring-name").fill("broad")
    add.locator("label:has-text('Office') input").check()
    add.locator("#new-ring-delay").fill("120")
    add.locator("#new-ring-rate").fill("90")
    add.locator("button:has-text('Add ring')").click()
    expect(page.locator(FLASH)).to_have_text("Added ring broad.")
    names = page.locator("#rings-table tr[data-ring] td:nth-child(2)")
    expect(names).to_have_text(["pilot", "broad"])
    expect(page.locator("tr[data-ring=broad]")).to_contain_text("90 % of the ring before")
    expect(page.locator("tr[data-ring=broad]")).to_contain_text("120 minutes")
    shots(page, "rings")
    # Reorder: broad first; then make pilot's gate manual.
    page.locator("tr[data-ring=broad] button:has-text('Earlier')").click()
    expect(page.locator(FLASH)).to_have_text("Ring order: broad → pilot.")
    expect(names).to_have_text(["broad", "pilot"])
    edit = page.locator("tr[data-edit-ring=pilot]")
    edit.locator("summary").click()
    edit.locator("select[name=ring_gate]").select_option("manual")
    edit.locator("input[name=ring_delay]").fill("30")
    edit.locator("button:has-text('Save ring')").click()
    expect(page.locator(FLASH)).to_have_text("Saved ring pilot.")
    expect(page.locator("tr[data-ring=pilot]")).to_contain_text(
        "Manual: waits for an administrator")
    expect(page.locator("tr[data-ring=pilot]")).to_contain_text("30 minutes")
    page.locator("tr[data-ring=broad] button:has-text('Delete')").click()
    expect(page.locator(FLASH)).to_have_text("Deleted ring broad.")
    expect(names).to_have_text(["pilot"])
    page.locator("tr[data-ring=pilot] button:has-text('Delete')").click()
    expect(page.locator(FLASH)).to_have_text("Deleted ring pilot.")


def test_maintenance_windows_on_the_policy_page(world: dict[str, Any], page: Page) -> None:
    url = world["api"].url
    page.goto(f"{url}/console/policies/Office/edit")
    windows = page.locator("#windows")
    expect(windows.locator(".empty")).to_contain_text("No maintenance windows")
    form = page.locator("#add-window-form")
    form.locator("#f-window_days").fill("sat,sun")
    form.locator("#f-window_tz").fill("Europe/Pariss")
    form.locator("button:has-text('Add window')").click()
    expect(page.locator("#window-error")).to_contain_text(
        "The maintenance window was not saved: Unknown time zone 'Europe/Pariss'")
    expect(page.locator("#err-window_tz")).to_contain_text("Unknown time zone")
    expect(page.locator("#f-window_days")).to_have_value("sat,sun")  # as typed
    shots(page, "window-error")
    form.locator("#f-window_tz").fill("Europe/Paris")
    form.locator("button:has-text('Add window')").click()
    expect(page.locator(FLASH)).to_have_text(
        "Added the maintenance window sat,sun 02:00–05:00 Europe/Paris.")
    row = page.locator("#windows-table tr[data-window]")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("Europe/Paris")
    expect(row.locator("td").nth(4)).to_contain_text(re.compile(r"Open|Opens \d{4}-"))
    shots(page, "windows")
    row.locator("button:has-text('Delete')").click()
    expect(page.locator(FLASH)).to_have_text("Deleted the maintenance window.")
    expect(windows.locator(".empty")).to_contain_text("No maintenance windows")


def test_start_a_dry_run_and_read_it(world: dict[str, Any], page: Page) -> None:
    url = world["api"].url
    page.goto(f"{url}/console/approvals")
    page.fill("#f-patch", "KB5900110")
    page.locator("#approve-form label:has-text('Office') input").check()
    page.click("#approve-form button:has-text('Approve')")
    expect(page.locator(FLASH)).to_contain_text("Approved KB5900110")
    page.click("nav >> text=Patch Cycle")
    expect(page).to_have_url(f"{url}/console/cycle")
    expect(page.locator(".empty")).to_have_text("No cycle run yet.")
    page.select_option("#f-policy", "Office")
    page.check("input[value=dry-run]")
    page.click("#start-run button:has-text('Start run')")
    expect(page).to_have_url(re.compile(r"/console/cycle/\d+$"))
    expect(page.locator(FLASH)).to_contain_text("of Office started.")
    run_id = page.url.rsplit("/", 1)[1]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = page.locator(".page-head .badge").inner_text()
        if state not in ("Pending", "Running"):
            break
        time.sleep(2)
        page.reload()
    expect(page.locator(".page-head .badge")).to_have_text(re.compile("Completed|Failed"))
    expect(page.locator("#run-steps tr[data-step=sync]")).to_contain_text("Skipped")
    expect(page.locator("#run-steps tr[data-step=scan]")).to_be_visible()
    shots(page, "run")
    page.click("text=Patch cycle")
    row = page.locator(f"#cycle-runs tr[data-run='{run_id}']")
    expect(row).to_contain_text("dry run")
    expect(row).to_contain_text("Manual")
    expect(row).to_contain_text("Sync skipped")
    shots(page, "runs")


def test_a_run_paused_at_a_gate_shows_its_plan_per_ring(world: dict[str, Any],
                                                        page: Page) -> None:
    """A run as a two-ring cycle leaves it (written as the flow writes it): steps with their
    summaries, and the plan grouped by ring with why each patch is approved."""
    import json
    import uuid

    from sqlalchemy import select

    from models import CycleRun, Policy
    from models.base import utcnow
    from models.db import session_scope

    steps = [("sync", "Skipped", "synced 1.2 h ago (within 24 h)"),
             ("scan", "Completed", "scan 7 completed: 3 endpoint(s) scanned, 6 missing "
              "pair(s), 0 failed"),
             ("approve", "Completed", "1 patch(es) approved for 3 install(s) on 3 endpoint(s)"),
             ("install:pilot", "Completed", "install job 4 done: 1 succeeded"),
             ("gate:broad", "Waiting", "manual gate; ring pilot: 1 of 1 installs succeeded "
              "(100 %)")]
    why = "rule 'critical-security': Critical, Security Updates; approved by alice on 2026-12-04"
    plan = [{"ring": "pilot", "patch": "KB5900110", "patch_id": world["patches"]["kb"],
             "kb": "KB5900110", "package_id": None, "endpoints": ["WS-1"], "why": why},
            {"ring": "broad", "patch": "KB5900110", "patch_id": world["patches"]["kb"],
             "kb": "KB5900110", "package_id": None, "endpoints": ["WS-2", "WS-3"], "why": why}]
    with session_scope(world["api"].db_url) as session:
        policy = session.scalar(select(Policy).where(Policy.name == "Office"))
        run = CycleRun(policy_id=policy.id, policy_name="Office", state="Paused",
                       trigger="scheduled", dry_run=False, started_by="prefect",
                       flow_run_id=str(uuid.uuid4()),
                       started_at=utcnow(), plan=json.dumps(plan), steps=json.dumps(
                           [{"name": n, "state": s, "summary": m, "at": utcnow().isoformat()}
                            for n, s, m in steps]))
        session.add(run)
        session.flush()
        run_id = run.id
    page.goto(f"{world['api'].url}/console/cycle")
    page.click(f"#cycle-runs tr[data-run='{run_id}'] a")
    expect(page.locator(".page-head .badge")).to_have_text("Paused")
    expect(page.locator("#run-steps tr[data-step='gate:broad']")).to_contain_text(
        "Manual gate; ring pilot: 1 of 1 installs succeeded (100 %)")
    rings = page.locator("section.ring-plan")
    expect(rings).to_have_count(2)
    expect(rings.nth(0).locator("h3")).to_contain_text("Ring pilot 1 patch, 1 install")
    expect(rings.nth(1).locator("h3")).to_contain_text("Ring broad 1 patch, 2 installs")
    expect(rings.nth(1).locator("tr[data-patch=KB5900110]")).to_contain_text("WS-2, WS-3")
    expect(rings.nth(0)).to_contain_text(why)
    shots(page, "run-plan")
    # Reject asks first; this run's flow is gone (no Prefect flow run has its id), which the
    # page says in one line instead of pretending the gate was answered.
    page.fill("#f-gate-reason", "pilot users report printing problems")
    page.click("#gate-form button:has-text('Reject')")
    expect(page.locator("p.question")).to_contain_text(f"Reject cycle run {run_id} at its gate?")
    page.click("button:has-text('Reject')")
    expect(page.locator(ERROR)).to_have_text(
        f"Cycle run {run_id} is marked paused but its Prefect flow run is not (its process "
        "may have died)")
    expect(page).to_have_url(f"{world['api'].url}/console/cycle/{run_id}")
