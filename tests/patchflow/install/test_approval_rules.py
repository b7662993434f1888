"""Automatic approval rules: the pure approval policy (no database), then `rules add/list/
delete/preview` on SQLite and MariaDB, including `--exploited` before and after vulnerability
data exists."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from models import Patch, PatchCve, Vulnerability
from models.db import session_scope
from patchflow.install.approval_policy import (
    NO_VULN_DATA,
    ManualApproval,
    PatchFacts,
    RuleSpec,
    approved_set,
    match,
)
from tests.fixtures.install.world import World, build

TODAY = dt.date(2026, 12, 4)
CU = PatchFacts(1, "KB5900110", "Critical", "Security Updates", ("Windows 11 Version 23H2",),
                release_date=dt.date(2026, 11, 10))
ZIP = PatchFacts(2, "7zip.7zip@25.01", "Unspecified", "Applications", ("7-Zip",),
                 package_id="7zip.7zip", release_date=dt.date(2026, 12, 1))
CRITICAL = RuleSpec("critical-security", frozenset({10}), severities=("Critical",),
                    categories=("Security Updates",), deadline_days=7)


def test_rule_match_says_why_and_what_failed() -> None:
    hit = match(CRITICAL, CU, TODAY)
    assert hit.why == "rule 'critical-security': Critical, Security Updates"
    assert hit.deadline == TODAY + dt.timedelta(days=7)
    assert match(CRITICAL, ZIP, TODAY).miss == "severity Unspecified"
    delayed = RuleSpec("apps", frozenset({10}), products=("7-zip",), delay_days=7)
    assert match(delayed, ZIP, TODAY).miss == "released 2026-12-01: approved from 2026-12-08"
    assert match(delayed, ZIP, dt.date(2026, 12, 8)).why == (
        "rule 'apps': 7-Zip, released 2026-12-01, 7+ days ago")
    by_id = RuleSpec("ids", frozenset({10}), products=("7zip.7zip",))
    assert match(by_id, ZIP, TODAY).why == "rule 'ids': 7-Zip"
    exploited = RuleSpec("kev", frozenset({10}), exploited=True)
    assert match(exploited, CU, TODAY).miss == NO_VULN_DATA
    assert match(exploited, PatchFacts(**{**CU.__dict__, "exploited": False}), TODAY).why is None
    assert match(exploited, PatchFacts(**{**CU.__dict__, "exploited": True}), TODAY).why == (
        "rule 'kev': exploited in the wild")


def test_approved_set_is_manual_plus_rules_minus_declines() -> None:
    manual = [ManualApproval(2, 11, "approved by alice on 2026-12-01", dt.date(2026, 12, 20)),
              ManualApproval(1, 99, "approved by bob on 2026-12-01")]
    # Endpoints in group 11, a subgroup of 10: both the rule (on 10) and alice's approval apply.
    got = approved_set({11, 10}, manual, [CRITICAL], [CU, ZIP], set(), TODAY)
    assert {k: v.why for k, v in got.items()} == {
        1: ["rule 'critical-security': Critical, Security Updates"],
        2: ["approved by alice on 2026-12-01"]}
    assert got[1].deadline == dt.date(2026, 12, 11) and got[2].deadline == dt.date(2026, 12, 20)
    assert set(approved_set({11, 10}, manual, [CRITICAL], [CU, ZIP], {1}, TODAY)) == {2}
    assert approved_set({12}, manual, [CRITICAL], [CU, ZIP], set(), TODAY) == {}


@pytest.fixture
def world(home: Path) -> World:
    with session_scope() as session:
        built = build(session)
        session.execute(update(Patch).where(Patch.id == built.patches["kb"])
                        .values(release_date=dt.date(2026, 11, 10)))
        return built


def _json(result: Any) -> Any:
    assert result.code == 0, result.err
    return json.loads(result.out)


def test_rules_add_list_preview_delete(world: World, cli: Any) -> None:
    out = _json(cli("rules", "add", "critical-security", "--groups", "Office", "--severity",
                    "critical", "--category", "Security Updates", "--deadline-days", "7",
                    "--json"))
    assert out["severity"] == ["Critical"] and out["groups"] == ["Office"]
    preview = _json(cli("rules", "preview", "critical-security", "--json"))
    assert [(r["patch"], r["endpoints_missing"], r["why"]) for r in preview["approves"]] == [
        ("KB5900110", 3, "rule 'critical-security': Critical, Security Updates")]
    assert preview["notes"] == []
    assert [r["name"] for r in _json(cli("rules", "list", "--json"))] == ["critical-security"]
    table = cli("rules", "preview", "critical-security")
    assert table.code == 0 and "KB5900110" in table.out
    for args, message in (
        (["rules", "add", "critical-security", "--groups", "Office"], "already exists"),
        (["rules", "add", "x", "--groups", "Nope"], "no group named 'Nope'"),
        (["rules", "add", "x", "--groups", " , "], "--groups names no group"),
        (["rules", "add", "x", "--groups", "Office", "--severity", "urgent"],
         "unknown severity 'urgent'"),
        (["rules", "add", "bad name!", "--groups", "Office"], "invalid rule name"),
        (["rules", "add", "x", "--groups", "Office", "--delay-days", "-1"], "--delay-days"),
        (["rules", "preview", "nope"], "no approval rule named 'nope'"),
        (["rules", "delete", "nope"], "no approval rule named 'nope'"),
    ):
        result = cli(*args)
        assert result.code == 2 and message in result.err, (args, result.err)
    # A declined patch is never approved by a rule.
    assert cli("decline", "KB5900110").code == 0
    preview = _json(cli("rules", "preview", "critical-security", "--json"))
    assert preview["approves"] == [] and preview["notes"] == [
        "1 matching patch(es) declined, left out"]
    assert cli("rules", "delete", "critical-security").code == 0
    assert _json(cli("rules", "list", "--json")) == []


def test_exploited_rule_matches_once_vulnerability_data_exists(world: World, cli: Any) -> None:
    assert cli("rules", "add", "kev", "--groups", "Office", "--exploited").code == 0
    preview = _json(cli("rules", "preview", "kev", "--json"))
    assert preview["approves"] == [] and "no vulnerability data yet" in preview["notes"][0]
    with session_scope() as session:
        session.add(PatchCve(patch_id=world.patches["kb"], cve="CVE-2026-1000"))
        session.add(Vulnerability(cve="CVE-2026-1000", source="kev", exploited=True))
        session.add(Vulnerability(cve="CVE-2026-2000", source="kev", exploited=False))
    preview = _json(cli("rules", "preview", "kev", "--json"))
    assert [(r["patch"], r["why"]) for r in preview["approves"]] == [
        ("KB5900110", "rule 'kev': exploited in the wild")]
    assert preview["notes"] == []
