"""Every figure of every report and of the dashboard against a direct SQL count, on SQLite and
MariaDB. The SQL here is written independently of the loaders (plain joins and GROUP BYs)."""

from __future__ import annotations

import datetime as dt
import statistics
from pathlib import Path

import pandas as pd
import pytest

from models.db import session_scope
from patchflow.reporting.report_data import (
    load_dashboard,
    load_endpoints,
    load_installed,
    load_outcomes,
)
from patchflow.scanning.missing_query import MissingFilters, load_missing
from reports.compliance import build_compliance
from reports.frames import SEVERITIES
from reports.installed import build_installed
from reports.missing import build_missing
from reports.patch_view import build_patch_view
from tests.support.report_seed import NOW, seed_home, sql_rows, sql_scalar

SCANNED = "('Missing Patches', 'Up-to-Date')"
# (endpoint, patch) pairs installed: succeeded job items, inventory KBs, inventory MSI codes.
INSTALLED_SQL = """
SELECT endpoint_id, patch_id FROM install_job_items WHERE state = 'succeeded'
UNION
SELECT iu.endpoint_id, p.id FROM installed_updates iu JOIN patches p ON p.kb = iu.kb
UNION
SELECT ip.endpoint_id, pi.patch_id FROM installed_programs ip
JOIN patch_installers pi ON pi.product_code = ip.product_code
"""
LATEST_ITEM_SQL = """
SELECT i.endpoint_id, i.patch_id, i.state FROM install_job_items i
WHERE i.id = (SELECT MAX(j.id) FROM install_job_items j
              WHERE j.endpoint_id = i.endpoint_id AND j.patch_id = i.patch_id)
"""


def _frames(filters: MissingFilters | None = None) -> dict[str, pd.DataFrame]:
    with session_scope() as session:
        return {
            "missing": load_missing(session, filters),
            "installed": load_installed(session, filters),
            "outcomes": load_outcomes(session, filters),
            "endpoints": load_endpoints(session, filters),
        }


def _by(frame: pd.DataFrame, key: str) -> dict:
    return frame.set_index(key).to_dict("index")


def test_missing_report_figures(home: Path, db_url: str) -> None:
    seed_home()
    report = build_missing(_frames()["missing"])
    sev = _by(report.table("missing-by-severity").frame, "severity")
    assert list(sev) == list(SEVERITIES)
    expected = {s: (p, n, e) for s, p, n, e in sql_rows(db_url, """
        SELECT p.severity, COUNT(DISTINCT mp.patch_id), COUNT(*), COUNT(DISTINCT mp.endpoint_id)
        FROM missing_patches mp JOIN patches p ON p.id = mp.patch_id GROUP BY p.severity""")}
    for severity in SEVERITIES:
        p, n, e = expected.get(severity, (0, 0, 0))
        assert (sev[severity]["patches"], sev[severity]["pairs"],
                sev[severity]["endpoints_affected"]) == (p, n, e), severity

    groups = _by(report.table("missing-by-group").frame, "group")
    for name, endpoints, patches, pairs, critical in sql_rows(db_url, """
            SELECT COALESCE(g.name, '(no group)'), COUNT(DISTINCT mp.endpoint_id),
                   COUNT(DISTINCT mp.patch_id), COUNT(*),
                   SUM(CASE WHEN p.severity = 'Critical' THEN 1 ELSE 0 END)
            FROM missing_patches mp JOIN endpoints e ON e.id = mp.endpoint_id
            JOIN patches p ON p.id = mp.patch_id LEFT JOIN groups g ON g.id = e.group_id
            GROUP BY COALESCE(g.name, '(no group)')"""):
        row = groups.pop(name)
        assert (row["endpoints_affected"], row["patches"], row["pairs"], row["Critical"]) == (
            endpoints, patches, pairs, critical), name
    assert not groups

    top = report.table("missing-top-patches").frame
    counts = dict(sql_rows(db_url, "SELECT patch_id, COUNT(DISTINCT endpoint_id) "
                                   "FROM missing_patches GROUP BY patch_id"))
    assert {r.patch_id: r.endpoints for r in top.itertuples()} == {
        pid: counts[pid] for pid in top["patch_id"]}
    assert top["endpoints"].max() == max(counts.values())
    headline = dict(report.headline)
    assert headline["Missing (endpoint, patch) pairs"] == "{:,}".format(
        sql_scalar(db_url, "SELECT COUNT(*) FROM missing_patches"))


def test_patch_view_figures(home: Path, db_url: str) -> None:
    seed_home()
    frames = _frames()
    view = build_patch_view(frames["missing"], frames["installed"], frames["outcomes"])
    table = _by(view.table("patches").frame, "patch_id")
    missing = dict(sql_rows(db_url, "SELECT patch_id, COUNT(DISTINCT endpoint_id) "
                                    "FROM missing_patches GROUP BY patch_id"))
    installed = dict(sql_rows(db_url, f"SELECT patch_id, COUNT(DISTINCT endpoint_id) "
                                      f"FROM ({INSTALLED_SQL}) x GROUP BY patch_id"))
    failed = dict(sql_rows(db_url, f"SELECT patch_id, COUNT(*) FROM ({LATEST_ITEM_SQL}) x "
                                   f"WHERE state = 'failed' GROUP BY patch_id"))
    assert set(table) == set(missing) | set(installed) | set(failed)
    for pid, row in table.items():
        assert (row["missing"], row["installed"], row["failed"]) == (
            missing.get(pid, 0), installed.get(pid, 0), failed.get(pid, 0)), pid
    # The seed has a pair that failed, then succeeded: history, not a failure.
    assert sum(failed.values()) < sql_scalar(
        db_url, "SELECT COUNT(*) FROM install_job_items WHERE state = 'failed'")
    # Most urgent first: severity order never goes backwards.
    ranks = [SEVERITIES.index(s) for s in view.table("patches").frame["severity"]]
    assert ranks == sorted(ranks)


def test_installed_report_figures(home: Path, db_url: str) -> None:
    seed_home()
    installed = _frames()["installed"]
    pairs = set(sql_rows(db_url, INSTALLED_SQL))
    assert set(zip(installed["endpoint_id"], installed["patch_id"], strict=True)) == pairs
    assert len(installed) == len(pairs)
    by_job = sql_rows(db_url, """
        SELECT i.endpoint_id, i.patch_id, j.created_by FROM install_job_items i
        JOIN install_jobs j ON j.id = i.job_id WHERE i.state = 'succeeded'""")
    jobs = installed[installed["source"] == "patchflow"]
    assert {(e, p, who) for e, p, who in by_job} == set(
        zip(jobs["endpoint_id"], jobs["patch_id"], jobs["started_by"], strict=True))
    assert (installed["source"] == "scan").sum() == len(pairs) - len(by_job)

    report = build_installed(installed)
    sev = _by(report.table("installed-by-severity").frame, "severity")
    expected = dict(sql_rows(db_url, f"""
        SELECT p.severity, COUNT(*) FROM ({INSTALLED_SQL}) x JOIN patches p ON p.id = x.patch_id
        GROUP BY p.severity"""))
    for severity in SEVERITIES:
        row = sev[severity]
        assert row["installed_by_patchflow"] + row["found_by_scan"] == expected.get(severity, 0)

    # Scan findings since the last report: inventories dated on or after 2024-03-10 only.
    since = dt.datetime(2024, 3, 10, 15, 30, tzinfo=dt.UTC)
    later = build_installed(installed, since).table("installed").frame
    kb_recent = sql_rows(db_url, """
        SELECT iu.endpoint_id, p.id FROM installed_updates iu JOIN patches p ON p.kb = iu.kb
        WHERE iu.installed_on >= :day
        UNION
        SELECT ip.endpoint_id, pi.patch_id FROM installed_programs ip
        JOIN patch_installers pi ON pi.product_code = ip.product_code
        WHERE ip.install_date >= :day""", day=dt.date(2024, 3, 10))
    scan_rows = later[later["source"] == "scan"]
    job_pairs = {(e, p) for e, p, _ in by_job}
    assert set(zip(scan_rows["endpoint_id"], scan_rows["patch_id"], strict=True)) == {
        pair for pair in kb_recent if pair not in job_pairs}
    assert (later["source"] == "patchflow").sum() == len(jobs)


def test_compliance_figures(home: Path, db_url: str) -> None:
    seed_home()
    frames = _frames()
    report = build_compliance(frames["endpoints"], frames["missing"], frames["installed"])
    over = report.table("compliance-overview").frame.iloc[0]
    total = sql_scalar(db_url, "SELECT COUNT(*) FROM endpoints")
    scanned = sql_scalar(db_url, f"SELECT COUNT(*) FROM endpoints WHERE scan_state IN {SCANNED}")
    up = sql_scalar(db_url, f"""
        SELECT COUNT(*) FROM endpoints e WHERE e.scan_state IN {SCANNED}
        AND NOT EXISTS (SELECT 1 FROM missing_patches mp WHERE mp.endpoint_id = e.id)""")
    assert (over["endpoints"], over["scanned"], over["up_to_date"]) == (total, scanned, up)
    assert over["not_scanned"] + over["missing_patches"] + over["up_to_date"] == total
    assert over["percent_up_to_date"] == pytest.approx(round(100 * up / total, 1))

    sev = _by(report.table("compliance-by-severity").frame, "severity")
    for severity in SEVERITIES:
        clean = sql_scalar(db_url, f"""
            SELECT COUNT(*) FROM endpoints e WHERE e.scan_state IN {SCANNED}
            AND NOT EXISTS (SELECT 1 FROM missing_patches mp JOIN patches p ON p.id = mp.patch_id
                            WHERE mp.endpoint_id = e.id AND p.severity = :s)""", s=severity)
        assert sev[severity]["up_to_date"] == clean, severity

    cat = _by(report.table("compliance-by-category").frame, "category")
    for category, pairs, affected in sql_rows(db_url, """
            SELECT p.category, COUNT(*), COUNT(DISTINCT mp.endpoint_id) FROM missing_patches mp
            JOIN patches p ON p.id = mp.patch_id GROUP BY p.category"""):
        assert (cat[category]["pairs"], cat[category]["endpoints_affected"]) == (pairs, affected)

    groups = _by(report.table("compliance-by-group").frame, "group")
    for name, endpoints, scanned_g, up_g in sql_rows(db_url, f"""
            SELECT COALESCE(g.name, '(no group)'), COUNT(*),
                   SUM(CASE WHEN e.scan_state IN {SCANNED} THEN 1 ELSE 0 END),
                   SUM(CASE WHEN e.scan_state IN {SCANNED} AND NOT EXISTS (
                       SELECT 1 FROM missing_patches mp WHERE mp.endpoint_id = e.id)
                       THEN 1 ELSE 0 END)
            FROM endpoints e LEFT JOIN groups g ON g.id = e.group_id
            GROUP BY COALESCE(g.name, '(no group)')"""):
        row = groups[name]
        assert (row["endpoints"], row["scanned"], row["up_to_date"]) == (
            endpoints, scanned_g, up_g), name

    # Mean days release → install, computed here from the raw rows of both sources.
    ttl = _by(report.table("compliance-time-to-install").frame, "severity")
    job_rows = sql_rows(db_url, """
        SELECT p.severity, p.release_date, i.finished_at FROM install_job_items i
        JOIN patches p ON p.id = i.patch_id WHERE i.state = 'succeeded'
        AND i.id IN (SELECT MAX(id) FROM install_job_items WHERE state = 'succeeded'
                     GROUP BY endpoint_id, patch_id)
        AND p.release_date IS NOT NULL""")
    days: dict[str, list[float]] = {}
    for severity, released, finished in job_rows:
        released = dt.date.fromisoformat(released) if isinstance(released, str) else released
        finished = (dt.datetime.fromisoformat(finished) if isinstance(finished, str)
                    else finished)
        start = dt.datetime.combine(released, dt.time())
        days.setdefault(severity, []).append((finished - start).total_seconds() / 86400)
    job_pairs = {(e, p) for e, p in sql_rows(
        db_url, "SELECT endpoint_id, patch_id FROM install_job_items WHERE state='succeeded'")}
    for eid, pid, severity, released, on in sql_rows(db_url, """
            SELECT x.endpoint_id, x.patch_id, p.severity, p.release_date, x.installed_on FROM (
              SELECT iu.endpoint_id, p2.id AS patch_id, iu.installed_on FROM installed_updates iu
              JOIN patches p2 ON p2.kb = iu.kb
              UNION
              SELECT ip.endpoint_id, pi.patch_id, ip.install_date FROM installed_programs ip
              JOIN patch_installers pi ON pi.product_code = ip.product_code) x
            JOIN patches p ON p.id = x.patch_id
            WHERE p.release_date IS NOT NULL AND x.installed_on IS NOT NULL"""):
        if (eid, pid) in job_pairs:
            continue
        released = dt.date.fromisoformat(released) if isinstance(released, str) else released
        on = dt.date.fromisoformat(on) if isinstance(on, str) else on
        days.setdefault(severity, []).append(float((on - released).days))
    for severity in SEVERITIES:
        values = days.get(severity, [])
        assert ttl[severity]["installs"] == len(values), severity
        if values:
            assert ttl[severity]["mean_days_to_install"] == pytest.approx(
                round(statistics.mean(values), 1))


def test_filtered_reports_agree_with_each_other(home: Path, db_url: str) -> None:
    """One filter, four reports: the same endpoints and patches everywhere."""
    seed_home()
    filters = MissingFilters(group="HQ", subgroups=True, severity=("Critical", "Important"))
    frames = _frames(filters)
    ids = {r[0] for r in sql_rows(db_url, """
        SELECT e.id FROM endpoints e JOIN groups g ON g.id = e.group_id
        WHERE g.name IN ('HQ', 'Finance', 'Payroll')""")}
    assert set(frames["endpoints"]["endpoint_id"]) == ids
    for name in ("missing", "installed", "outcomes"):
        frame = frames[name]
        assert set(frame["endpoint_id"]) <= ids, name
        assert set(frame["severity"]) <= {"Critical", "Important"}, name
    expected = sql_scalar(db_url, """
        SELECT COUNT(*) FROM missing_patches mp JOIN endpoints e ON e.id = mp.endpoint_id
        JOIN groups g ON g.id = e.group_id JOIN patches p ON p.id = mp.patch_id
        WHERE g.name IN ('HQ', 'Finance', 'Payroll') AND p.severity IN ('Critical','Important')""")
    assert len(frames["missing"]) == expected
    compliance = build_compliance(frames["endpoints"], frames["missing"], frames["installed"])
    assert compliance.table("compliance-overview").frame.iloc[0]["missing_pairs"] == expected


def test_dashboard_against_sql(home: Path, db_url: str) -> None:
    seed_home()
    with session_scope() as session:
        data = load_dashboard(session)
    assert list(data["missing_by_severity"]) == list(SEVERITIES)
    expected = {s: (p, n) for s, p, n in sql_rows(db_url, """
        SELECT p.severity, COUNT(DISTINCT mp.patch_id), COUNT(*)
        FROM missing_patches mp JOIN patches p ON p.id = mp.patch_id GROUP BY p.severity""")}
    for severity, counts in data["missing_by_severity"].items():
        assert (counts["patches"], counts["pairs"]) == expected.get(severity, (0, 0))
    states = dict(sql_rows(db_url, "SELECT scan_state, COUNT(*) FROM endpoints "
                                   "GROUP BY scan_state"))
    over = data["scan_overview"]
    assert over["missing_patches"] == states["Missing Patches"]
    assert over["up_to_date"] == states["Up-to-Date"]
    assert over["not_scanned"] == (states["Not Scanned"] + states["Scanning"]
                                   + states["Scan Failed"])
    assert sum(over.values()) == data["endpoints"] == sql_scalar(
        db_url, "SELECT COUNT(*) FROM endpoints")


def test_dashboard_of_an_empty_fleet(sqlite_home: Path) -> None:
    with session_scope() as session:
        data = load_dashboard(session)
    assert data["endpoints"] == 0
    assert data["missing_by_severity"] == {s: {"patches": 0, "pairs": 0} for s in SEVERITIES}
    assert data["scan_overview"] == {"missing_patches": 0, "not_scanned": 0, "up_to_date": 0}


def test_reports_of_an_empty_fleet_build(sqlite_home: Path) -> None:
    frames = _frames()
    for report in (build_missing(frames["missing"]), build_installed(frames["installed"], NOW),
                   build_patch_view(frames["missing"], frames["installed"], frames["outcomes"]),
                   build_compliance(frames["endpoints"], frames["missing"],
                                    frames["installed"])):
        assert report.tables and report.headline
