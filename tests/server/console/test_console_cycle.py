"""The console's patch-cycle pages over real HTTPS on SQLite and MariaDB: approvals and
declines, automatic approval rules, a policy's rings and cycle runs. Bad input is a 4xx page
with a one-line error at the top and at its field, nothing stored; good input goes through the
same services as the CLI and leaves an audit line with the console as its source. The pages
are driven in a browser in test_console_cycle_browser.py.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.fixtures.agent.harness import Api
from tests.fixtures.console import (  # noqa: F401 (console_api, console_server: the fixtures)
    add_admin,
    console_api,
    console_server,
    csrf_of,
    log_in,
)


@pytest.fixture
def http(api: Api, cli, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A logged-in client over the install world (policy Office, group Office, KB5900110,
    7-Zip and Java missing on WS-1..3)."""
    from models.db import session_scope
    from tests.fixtures.install import world

    with session_scope(api.db_url) as session:
        world.build(session)
    assert add_admin(cli, monkeypatch).code == 0
    with api.client() as client:
        assert log_in(client).status_code == 303
        client.headers["x-test-csrf"] = csrf_of(client.get("/console/dashboard").text)
        yield client


def post(http: httpx.Client, path: str, **data: Any) -> httpx.Response:
    return http.post(path, data={"csrf_token": http.headers["x-test-csrf"], **data})


def flash(http: httpx.Client, done: httpx.Response) -> str:
    assert done.status_code == 303, done.text[:600]
    page = http.get(done.headers["location"]).text
    found = re.search(r'<p class="flash flash-(\w+)" role="\w+">([^<]*)</p>', page)
    assert found, page[:800]
    return f"{found.group(1)}: {html.unescape(found.group(2))}"


def field_error(page: str) -> str:
    found = re.search(r'<p class="field-error" id="err-([\w-]+)" role="alert">([^<]*)</p>', page)
    assert found, page[:1500]
    return f"{found.group(1)}: {html.unescape(found.group(2))}"


def rows(api: Api, sql: str) -> list[tuple[Any, ...]]:
    from models.db import get_engine

    with get_engine(api.db_url).connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_approvals_and_declines(api: Api, http: httpx.Client) -> None:
    assert http.get("/console/approvals").status_code == 200
    # Bad input: 400, the form as sent, the error at the top and at its field; nothing stored.
    for data, expected in (
            ({"patch": "", "groups": "Office"}, "patch: Give the patch"),
            ({"patch": "KB5900110"}, "groups: Tick at least one group."),
            ({"patch": "KB404", "groups": "Office"}, "patch: No patch 'KB404'"),
            ({"patch": "KB5900110", "groups": "Nope"}, "groups: No group named 'Nope'"),
            ({"patch": "KB5900110", "groups": "Office", "deadline": "2020-01-01"},
             "deadline: The deadline 2020-01-01 is in the past"),
            ({"patch": "KB5900110", "groups": "Office", "deadline": "soon"},
             "deadline: ")):
        page = post(http, "/console/approvals/approve", **data)
        assert page.status_code == 400, data
        assert field_error(page.text).startswith(expected), (data, field_error(page.text))
        assert 'class="form-error"' in page.text and "--" not in field_error(page.text)
    assert rows(api, "SELECT patch_id FROM patch_approvals") == []
    # A field's value is kept after an error (escaped).
    page = post(http, "/console/approvals/approve", patch="<b>x</b>", groups="Office")
    assert 'value="&lt;b&gt;x&lt;/b&gt;"' in page.text and "<b>x</b>" not in page.text

    done = post(http, "/console/approvals/approve", patch="KB5900110", groups="Office",
                deadline="2099-12-31")
    assert flash(http, done) == ("ok: Approved KB5900110 for Office, install by 2099-12-31.")
    listed = http.get("/console/approvals").text
    assert "approved by alice on" in listed and "2099-12-31" in listed
    # By group (`approvals list --group`): its approvals only; an unknown group is a 404.
    assert 'data-group="Office"' in http.get("/console/approvals?group=Office").text
    assert http.get("/console/approvals?group=Nope").status_code == 404
    assert rows(api, "SELECT action, target, source FROM audit_events "
                     "WHERE action = 'patch.approve'") == [("patch.approve", "KB5900110",
                                                            "console")]
    kb_id = rows(api, "SELECT id FROM patches WHERE kb = 'KB5900110'")[0][0]
    # One patch's page (from the patch page's link): only its approvals, forms filled in.
    one = http.get(f"/console/approvals?patch={kb_id}").text
    assert "Approvals of KB5900110" in one and 'value="KB5900110"' in one
    assert http.get("/console/approvals?patch=KB404").status_code == 404

    # Decline asks first, without a confirmation nothing happens.
    ask = post(http, "/console/approvals/decline", decline_patch="7zip.7zip@25.01",
               reason="breaks the ERP")
    assert ask.status_code == 200 and "Decline 7zip.7zip@25.01?" in ask.text
    assert rows(api, "SELECT patch_id FROM patch_declines") == []
    done = post(http, "/console/approvals/decline", decline_patch="7zip.7zip@25.01",
                reason="breaks the ERP", confirmed="yes")
    assert flash(http, done) == "ok: Declined 7zip.7zip@25.01."
    assert "declined by alice: breaks the ERP" in http.get("/console/approvals").text
    page = post(http, "/console/approvals/approve", patch="7zip.7zip@25.01", groups="Office")
    assert page.status_code == 400
    assert field_error(page.text) == "patch: 7zip.7zip@25.01 is declined: undecline it first"
    zip_id = rows(api, "SELECT patch_id FROM patch_declines")[0][0]
    done = post(http, "/console/approvals/undecline", patch=str(zip_id))
    assert flash(http, done) == "ok: 7zip.7zip@25.01 is offered again."
    done = post(http, "/console/approvals/undecline", patch=str(zip_id))
    assert flash(http, done) == "error: 7zip.7zip@25.01 is not declined"

    ask = post(http, "/console/approvals/unapprove", patch=str(kb_id), group="Office")
    assert ask.status_code == 200 and "Withdraw the approval of" in ask.text
    assert len(rows(api, "SELECT id FROM patch_approvals")) == 1
    done = post(http, "/console/approvals/unapprove", patch=str(kb_id), group="Office",
                confirmed="yes", focus=str(kb_id))
    assert done.headers["location"] == f"/console/approvals?patch={kb_id}"
    assert flash(http, done) == "ok: Withdrew the approval of KB5900110 for Office."
    assert rows(api, "SELECT id FROM patch_approvals") == []
    # Without the form's token nothing is done.
    refused = http.post("/console/approvals/decline",
                        data={"decline_patch": "KB5900110", "confirmed": "yes"})
    assert refused.status_code == 403 and rows(api, "SELECT patch_id FROM patch_declines") == []


def test_rules_add_preview_delete(api: Api, http: httpx.Client) -> None:
    good = {"name": "critical-security", "groups": "Office", "severity": "Critical",
            "category": "Security Updates", "delay_days": "0", "deadline_days": "7"}
    for change, expected in (
            ({"name": "bad name!"}, "name: Invalid rule name 'bad name!'"),
            ({"groups": ""}, "groups: Tick at least one group."),
            ({"delay_days": "soon"}, "delay_days: The delay after release takes a whole"),
            ({"deadline_days": "99999"},
             "deadline_days: The deadline after approval must be between 0"),
            ({"severity": "Urgent"}, "severity: Unknown severity 'Urgent'")):
        page = post(http, "/console/rules/new", **{**good, **change})
        assert page.status_code == 400, change
        assert 'id="rule-error"' in page.text
        assert field_error(page.text).startswith(expected), (change, field_error(page.text))
    assert rows(api, "SELECT name FROM approval_rules") == []
    done = post(http, "/console/rules/new", **good)
    assert flash(http, done).startswith("ok: Added rule critical-security: groups Office; "
                                        "severity Critical")
    again = post(http, "/console/rules/new", **good)
    assert again.status_code == 400
    assert field_error(again.text).startswith("name: A rule named 'critical-security' already")
    listed = http.get("/console/rules").text
    assert 'data-rule="critical-security"' in listed and "7 days after approval" in listed

    preview = http.get("/console/rules/critical-security")
    assert preview.status_code == 200
    assert 'data-patch="KB5900110"' in preview.text and "7zip" not in preview.text
    assert "rule &#39;critical-security&#39;: Critical, Security Updates" in preview.text
    assert "3 endpoints" in preview.text
    assert http.get("/console/rules/nope").status_code == 404
    # An exploited-only rule says why it approves nothing before the feeds have run.
    post(http, "/console/rules/new", name="exploited", groups="Office", exploited="on")
    shown = http.get("/console/rules/exploited").text
    assert "Exploited: no vulnerability data yet: exploited is unknown, so this rule matches " \
        "nothing yet" in shown

    ask = post(http, "/console/rules/critical-security/delete")
    assert ask.status_code == 200 and "Delete rule critical-security?" in ask.text
    done = post(http, "/console/rules/critical-security/delete", confirmed="yes")
    assert flash(http, done) == "ok: Deleted rule critical-security."
    assert post(http, "/console/rules/critical-security/delete").status_code == 404
    assert ("rule.add", "console") in rows(api, "SELECT action, source FROM audit_events")
    assert ("rule.delete", "console") in rows(api, "SELECT action, source FROM audit_events")


def test_rings_on_the_policy_page(api: Api, http: httpx.Client) -> None:
    from models import Group
    from models.db import session_scope

    with session_scope(api.db_url) as session:
        session.add_all([Group(name="Pilot"), Group(name="Servers")])
    page = http.get("/console/policies/Office/edit").text
    assert 'id="rings"' in page and "No rings" in page
    ring = {"policy": "Office", "ring_name": "pilot", "ring_groups": "Pilot",
            "ring_delay": "0", "ring_rate": "95", "ring_gate": "rate"}
    for change, expected in (({"ring_rate": "150"}, "new-ring-rate: The minimum success rate"),
                             ({"ring_delay": "x"}, "new-ring-delay: The delay takes"),
                             ({"ring_name": "a b"}, "new-ring-name: Invalid ring name"),
                             ({"ring_groups": "Nope"}, "No group named 'Nope'")):
        bad = post(http, "/console/rings/add", **{**ring, **change})
        assert bad.status_code == 400, change
        assert 'id="ring-error"' in bad.text, change
        if change != {"ring_groups": "Nope"}:
            assert field_error(bad.text).startswith(expected), field_error(bad.text)
        else:
            assert expected in html.unescape(bad.text)
    assert rows(api, "SELECT name FROM policy_rings") == []
    assert flash(http, post(http, "/console/rings/add", **ring)) == "ok: Added ring pilot."
    dup = post(http, "/console/rings/add", **ring)
    assert dup.status_code == 400 and "already has a ring named" in dup.text
    done = post(http, "/console/rings/add", **{**ring, "ring_name": "broad",
                                               "ring_groups": ["Office", "Servers"],
                                               "ring_delay": "60", "ring_rate": "90"})
    assert flash(http, done) == "ok: Added ring broad."
    order = "SELECT name FROM policy_rings ORDER BY position"
    assert rows(api, order) == [("pilot",), ("broad",)]
    done = post(http, "/console/rings/move", policy="Office", ring_name="broad",
                direction="up")
    assert flash(http, done) == "ok: Ring order: broad → pilot."
    assert rows(api, order) == [("broad",), ("pilot",)]
    done = post(http, "/console/rings/move", policy="Office", ring_name="broad",
                direction="up")
    assert flash(http, done) == "error: Ring broad is already the first"
    done = post(http, "/console/rings/edit", policy="Office", ring_name="pilot",
                ring_groups="Pilot", ring_delay="30", ring_rate="80", ring_gate="manual")
    assert flash(http, done) == "ok: Saved ring pilot."
    assert rows(api, "SELECT delay_minutes, min_success_rate, gate FROM policy_rings "
                     "WHERE name = 'pilot'") == [(30, 80, "manual")]
    bad = post(http, "/console/rings/edit", policy="Office", ring_name="pilot",
               ring_groups="Pilot", ring_delay="30", ring_rate="80", ring_gate="sometimes")
    assert bad.status_code == 400 and "Invalid gate &#39;sometimes&#39;: rate or manual" in bad.text
    page = http.get("/console/policies/Office/edit").text
    assert page.index('data-ring="broad"') < page.index('data-ring="pilot"')
    ask = post(http, "/console/rings/delete", policy="Office", ring_name="pilot")
    assert ask.status_code == 200 and "Delete ring pilot of policy Office?" in ask.text
    done = post(http, "/console/rings/delete", policy="Office", ring_name="pilot",
                confirmed="yes")
    assert flash(http, done) == "ok: Deleted ring pilot."
    assert rows(api, order) == [("broad",)]
    assert post(http, "/console/rings/add", **{**ring, "policy": "Nope"}).status_code == 404
    actions = rows(api, "SELECT action FROM audit_events WHERE source = 'console'")
    assert {("ring.add",), ("ring.move",), ("ring.edit",), ("ring.delete",)} <= set(actions)


def test_maintenance_windows_on_the_policy_page(api: Api, http: httpx.Client) -> None:
    page = http.get("/console/policies/Office/edit").text
    assert 'id="windows"' in page and "No maintenance windows" in page
    window = {"policy": "Office", "window_days": "mon-fri", "window_from": "22:00",
              "window_to": "04:30", "window_tz": "Europe/Paris"}
    for change, expected in (
            ({"window_tz": "Mars/Olympus"}, "window_tz: Unknown time zone 'Mars/Olympus'"),
            ({"window_from": "25:00"}, "window_from: Invalid From '25:00': use HH:MM"),
            ({"window_days": "someday"}, "window_days: Invalid weekday 'someday'"),
            ({"window_to": "22:00"}, "window_from: From and To are the same time")):
        bad = post(http, "/console/windows/add", **{**window, **change})
        assert bad.status_code == 400, change
        assert 'id="window-error"' in bad.text, change  # at the top and at the field
        assert field_error(bad.text).startswith(expected), field_error(bad.text)
        assert "--" not in field_error(bad.text)  # web words, not CLI flags
        sent = next(iter(change))
        assert f'value="{html.escape(change[sent])}"' in bad.text  # what was typed stays
    assert rows(api, "SELECT id FROM maintenance_windows") == []
    done = post(http, "/console/windows/add", **window)
    assert flash(http, done) == "ok: Added the maintenance window mon,tue,wed,thu,fri " \
                                "22:00–04:30 Europe/Paris."
    [(window_id, days, tz)] = rows(api, "SELECT id, days, time_zone FROM maintenance_windows")
    assert (days, tz) == ("mon,tue,wed,thu,fri", "Europe/Paris")
    page = http.get("/console/policies/Office/edit").text
    row = re.search(rf'<tr data-window="{window_id}">(.*?)</tr>', page, re.S)
    assert row and "(next day)" in row.group(1) and ("Open" in row.group(1)
                                                     or "Opens " in row.group(1))
    ask = post(http, "/console/windows/delete", policy="Office", window=str(window_id))
    assert ask.status_code == 200 and "Delete this maintenance window of policy Office?" \
        in ask.text
    assert post(http, "/console/windows/delete", policy="Office", window="x").status_code == 400
    done = post(http, "/console/windows/delete", policy="Office", window=str(window_id),
                confirmed="yes")
    assert flash(http, done) == "ok: Deleted the maintenance window."
    done = post(http, "/console/windows/delete", policy="Office", window=str(window_id),
                confirmed="yes")
    assert flash(http, done).startswith("error: Policy Office has no maintenance window")
    assert post(http, "/console/windows/add", **{**window, "policy": "Nope"}).status_code == 404
    actions = rows(api, "SELECT action FROM audit_events WHERE source = 'console'")
    assert {("window.add",), ("window.delete",)} <= set(actions)


def seed_run(api: Api, state: str, steps: list[dict[str, Any]], plan: list[dict[str, Any]],
             dry_run: bool = True) -> int:
    from models import CycleRun, Policy
    from models.base import utcnow
    from models.db import session_scope

    with session_scope(api.db_url) as session:
        policy = session.scalar(sa.select(Policy).where(Policy.name == "Office"))
        run = CycleRun(policy_id=policy.id, policy_name="Office", state=state,
                       trigger="scheduled", dry_run=dry_run, started_by="prefect",
                       started_at=utcnow(), steps=json.dumps(steps), plan=json.dumps(plan),
                       message="step scan failed" if state == "Failed" else None)
        session.add(run)
        session.flush()
        return run.id


def test_cycle_runs_pages_and_start(api: Api, http: httpx.Client) -> None:
    steps = [{"name": "sync", "state": "Skipped", "summary": "synced 2 h ago",
              "at": "2026-12-01T10:00:00"},
             {"name": "approve", "state": "Completed",
              "summary": "1 patch(es) approved for 2 install(s) on 2 endpoint(s)",
              "at": "2026-12-01T10:01:00"},
             {"name": "gate:broad", "state": "Waiting", "at": "2026-12-01T10:02:00",
              "summary": "manual gate: waiting for an administrator (`patchflow cycle resume "
                         "1` [--reject], or Resume in the Prefect UI; at most 72 h)"}]
    plan = [{"ring": "pilot", "patch": "KB5900110", "patch_id": 1, "kb": "KB5900110",
             "package_id": None, "endpoints": ["WS-1"], "why": "<script>x</script>"},
            {"ring": "broad", "patch": "KB5900110", "patch_id": 1, "kb": "KB5900110",
             "package_id": None, "endpoints": ["WS-2", "WS-3"], "why": "approved by bob"}]
    run_id = seed_run(api, "Completed", steps, plan)
    listed = http.get("/console/cycle").text
    assert f'data-run="{run_id}"' in listed and "Scheduled" in listed
    assert "Approve <span" in listed and 'badge-completed' in listed
    assert 'data-run' in http.get("/console/cycle?policy=Office").text
    assert http.get("/console/cycle?policy=Nope").status_code == 400
    page = http.get(f"/console/cycle/{run_id}").text
    assert 'data-step="approve"' in page and "1 patch(es) approved" in page
    assert page.index('data-ring="pilot"') < page.index('data-ring="broad"')
    assert "&lt;script&gt;x&lt;/script&gt;" in page and "<script>x" not in page
    assert "WS-2, WS-3" in page
    # Step summaries speak the browser's language, not the CLI's.
    assert "<td>Manual gate: waiting for an administrator</td>" in page
    assert "patchflow cycle resume" not in page and "Gate, ring broad" in page
    assert http.get("/console/cycle/99999").status_code == 404
    assert http.get("/console/cycle/abc").status_code in (404, 422)

    # Starting: bad input is refused before anything runs.
    assert post(http, "/console/cycle/start", policy="Office", mode="sometimes"
                ).status_code == 400
    assert flash(http, post(http, "/console/cycle/start", policy="Nope", mode="dry-run")) == \
        "error: No policy named 'Nope'"
    ask = post(http, "/console/cycle/start", policy="Office", mode="install")
    assert ask.status_code == 200 and "Run the patch cycle of Office and install" in ask.text
    assert len(rows(api, "SELECT id FROM cycle_runs")) == 1
    # One cycle per policy at a time: a going run refuses a second one (the CLI's check).
    going = seed_run(api, "Running", [], [], dry_run=False)
    done = post(http, "/console/cycle/start", policy="Office", mode="install", confirmed="yes")
    assert flash(http, done) == f"error: Cycle run {going} of policy Office is still running"
    assert len(rows(api, "SELECT id FROM cycle_runs")) == 2
    assert "reload the page to follow it" in http.get(f"/console/cycle/{going}").text


@pytest.mark.usefixtures("prefect")
def test_gate_answers_are_checked(api: Api, http: httpx.Client) -> None:
    """Resume / Reject call the same service as `patchflow cycle resume`: a run that is not
    paused, or whose Prefect flow run is not, is a one-line refusal and no audit line."""
    import uuid

    from models import CycleRun
    from models.db import session_scope

    done_run = seed_run(api, "Completed", [], [])
    assert 'id="gate-form"' not in http.get(f"/console/cycle/{done_run}").text
    refused = post(http, f"/console/cycle/{done_run}/gate", decision="resume")
    assert flash(http, refused) == (f"error: Cycle run {done_run} is not waiting at a gate "
                                    "(it is completed)")
    paused = seed_run(api, "Paused", [], [], dry_run=False)
    with session_scope(api.db_url) as session:
        session.get(CycleRun, paused).flow_run_id = str(uuid.uuid4())
    page = http.get(f"/console/cycle/{paused}").text
    assert 'id="gate-form"' in page
    assert post(http, f"/console/cycle/{paused}/gate", decision="maybe").status_code == 400
    ask = post(http, f"/console/cycle/{paused}/gate", decision="reject", reason="too risky")
    assert ask.status_code == 200 and f"Reject cycle run {paused} at its gate?" in ask.text
    assert 'name="reason" value="too risky"' in ask.text
    gone = post(http, f"/console/cycle/{paused}/gate", decision="resume")
    assert flash(http, gone) == (f"error: Cycle run {paused} is marked paused but its Prefect "
                                 "flow run is not (its process may have died)")
    assert rows(api, "SELECT id FROM audit_events WHERE action LIKE 'cycle.re%'") == []
