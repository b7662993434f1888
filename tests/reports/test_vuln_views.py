"""The vulnerability facts where administrators act on them, on SQLite and MariaDB with the
real KEV, Mozilla and NVD files as offline sources: `install list` (rated severity, exploited,
`--exploited`, the same pairs as `missing --exploited`), the missing-patch and compliance
reports (CVEs, CVSS, exploited and KEV due date columns in HTML and CSV; overdue KEV pairs),
feeds that end Stopped when their sync is interrupted or cancelled, the daily feeds deployment,
and the patch cycle syncing feeds older than a day before its scan."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.flows.test_feeds_scan import _prepare
from tests.support.httpserver import serving
from tests.support.paths import REPO
from tests.support.report_seed import sql_rows

pytestmark = pytest.mark.usefixtures("prefect")
ROOT = REPO
ZIP_CVES = ["CVE-2024-11477", "CVE-2025-0411", "CVE-2025-53816"]


def _json(result):  # type: ignore[no-untyped-def]
    assert result.code == 0, result.out + result.err
    return json.loads(result.out)


def test_install_list_is_rated_and_filters_exploited(cli, home: Path, tmp_path: Path) -> None:
    _prepare(cli, tmp_path)
    rows = {r["patch"]: r for r in _json(cli("install", "list", "--json"))}
    zip_row = rows["7zip.7zip@25.01"]
    # Two pairs (23.01 and 24.08 installed): the worst rating, the union of their CVEs.
    assert zip_row["endpoints"] == 2 and zip_row["severity"] == "Important"
    assert zip_row["exploited"] is True and zip_row["kev_due_date"] == "2025-02-27"
    assert zip_row["cves"] == ZIP_CVES and zip_row["cvss"] == 7.8
    firefox = next(r for r in rows.values() if r["package_id"] == "Mozilla.Firefox")
    assert firefox["severity"] == "Critical" and firefox["exploited"] is False
    # The Severity filter selects by the rated severity, as `missing --severity` does.
    critical = _json(cli("install", "list", "--json", "--severity", "critical"))
    assert firefox["patch"] in {r["patch"] for r in critical}
    assert all(r["severity"] == "Critical" for r in critical)

    exploited = _json(cli("install", "list", "--json", "--exploited"))
    assert exploited and all(r["exploited"] for r in exploited)
    pairs = _json(cli("missing", "--json", "--exploited"))
    assert {r["patch_id"] for r in exploited} == {r["patch_id"] for r in pairs}
    assert sum(r["endpoints"] for r in exploited) == len(pairs)
    both = _json(cli("install", "list", "--json", "--exploited", "--severity", "Critical"))
    assert both == []  # Firefox is Critical but not exploited; 7-Zip exploited but Important
    table = cli("install", "list", "--exploited")
    assert table.code == 0 and f"{len(exploited)} missing patches" in table.out
    r = cli("install", "list", "--exploited", "--severity", "urgent")
    assert r.code == 2 and "unknown severity 'urgent'" in r.err and "Traceback" not in r.err


def test_reports_carry_cves_cvss_exploited_and_overdue_kev(
        cli, home: Path, tmp_path: Path) -> None:
    _prepare(cli, tmp_path)
    out = tmp_path / "reports"
    r = cli("report", "--kind", "missing,compliance", "--out", str(out))
    assert r.code == 0, r.err
    with (out / "missing.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"cves", "cvss", "exploited", "kev_due_date"} <= set(rows[0])
    zip_old = next(x for x in rows if x["endpoint"] == "WS-01" and x["package_id"] == "7zip.7zip")
    assert zip_old["cves"] == "; ".join(ZIP_CVES)
    assert float(zip_old["cvss"]) == 7.8 and zip_old["exploited"] == "yes"
    assert zip_old["kev_due_date"] == "2025-02-27" and zip_old["severity"] == "Important"
    firefox = next(x for x in rows if x["package_id"] == "Mozilla.Firefox")
    assert firefox["exploited"] == "no" and "CVE-2025-4918" in firefox["cves"]
    # The CSV lists what `missing --json` lists.
    listed = _json(cli("missing", "--json"))
    assert len(rows) == len(listed)
    assert sum(x["exploited"] == "yes" for x in rows) == sum(x["exploited"] for x in listed)

    pages = [out / "missing.html", *sorted((out / "missing-pages").glob("*.html"))]
    html = "".join(p.read_text(encoding="utf-8") for p in pages if p.exists())
    assert ">CVEs</th>" in html and ">CVSS</th>" in html and ">Exploited</th>" in html
    assert "CVE-2025-0411" in html and "Pairs with a CVE exploited in the wild" in html

    board = _json(cli("dashboard", "--json"))
    with (out / "compliance-overview.csv").open(encoding="utf-8", newline="") as handle:
        overview = next(csv.DictReader(handle))
    assert int(overview["overdue_kev_pairs"]) == board["overdue_kev"] == 2
    compliance = (out / "compliance.html").read_text(encoding="utf-8")
    assert "Overdue KEV pairs" in compliance

    # The console's report form passes the Exploited filter on: only exploited pairs.
    from patchflow.scanning.missing_query import MissingFilters

    filters = MissingFilters(exploited=True)
    assert filters.describe() == "exploited in the wild"
    assert MissingFilters.from_json(filters.to_json()).exploited is True
    from patchflow.reporting.service import build_reports, load_frames

    frames = load_frames(filters, ["missing"])
    assert frames.missing is not None and len(frames.missing) == board["exploited"]["pairs"]
    (report,) = build_reports(frames, ["missing"])
    assert set(report.table("missing").frame["exploited"]) == {"yes"}


def test_report_cells_from_upstreams_are_escaped_and_neutralised() -> None:
    """A CVE list is text from upstream feeds: formula-safe in CSV, escaped in HTML."""
    from reports.csv import csv_frame
    from reports.frames import RATED_MISSING_COLUMNS
    from reports.html import HtmlOptions, render_report
    from reports.missing import build_missing

    row = {c: None for c in RATED_MISSING_COLUMNS}
    row.update(endpoint="WS-1", endpoint_id=1, patch_id=7, title="Tool 2.0", severity="Low",
               category="Application", cves=["=HYPERLINK(\"http://x\")", "<script>x</script>"],
               cvss=None, exploited=False, kev_due_date=None,
               detected_at=pd.Timestamp("2026-01-01", tz="UTC"))
    report = build_missing(pd.DataFrame([row]))
    table = csv_frame(report.table("missing").frame)
    assert table["cves"].iloc[0].startswith("'=HYPERLINK")
    assert table["exploited"].iloc[0] == "no"
    opts = HtmlOptions(generated_at=dt.datetime(2026, 1, 2, tzinfo=dt.UTC), filters="all",
                       console_url=None, page_rows=100, csv_files=frozenset())
    html = "".join(text for _rel, text in render_report(report, opts))
    assert "<script>x</script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html


# --- feeds: Stopped --------------------------------------------------------------------------


@contextmanager
def _stalling_source() -> Iterator[tuple[str, threading.Event]]:
    """A loopback URL whose answer never comes (until the test ends): a feed download in
    progress, to interrupt."""
    hit, release = threading.Event(), threading.Event()

    class Stall(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hit.set()
            release.wait(120)

        def log_message(self, *args: object) -> None:
            pass

    with serving(Stall) as url:
        try:
            yield f"{url}/kev.json", hit
        finally:
            release.set()


def test_stopped_feed_sync_ends_stopped(cli, home: Path, db_url: str) -> None:
    """`feeds sync --stop` on a `patchflow feeds sync` running in another process (a real
    process, mid-download): it is interrupted as Ctrl+C in its terminal would, and the feed
    ends Stopped, not Running; what KEV held before stays. A feed left Running by a run that is
    over is marked Stopped by the same command."""
    from prefect.settings import PREFECT_API_URL

    from tests.conftest import shared_fixtures

    kev_file = next(shared_fixtures("vuln", "kev").glob("*.json.gz"))
    assert cli("init").code == 0
    assert cli("feeds", "set", "kev", "--source", str(kev_file)).code == 0
    assert cli("feeds", "sync", "kev").code == 0
    before = {f["name"]: f for f in _json(cli("feeds", "list", "--json"))}["kev"]
    assert before["status"] == "Successful" and before["records"] > 1000
    with _stalling_source() as (url, hit):
        assert cli("feeds", "set", "kev", "--source", url).code == 0
        env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()),
               "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen([sys.executable, "-m", "patchflow", "feeds", "sync", "kev"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert hit.wait(120), "the feed sync never asked for the KEV catalog"
            running = {f["name"]: f for f in _json(cli("feeds", "list", "--json"))}["kev"]
            assert running["status"] == "Running"
            r = cli("feeds", "sync", "--stop", "nvd")
            assert r.code == 2 and "no feed is syncing (nvd)" in r.err
            r = cli("feeds", "sync", "--stop")
            assert r.code == 0, r.err
            assert "feed kev: stop requested (interrupted)" in " ".join(r.out.split())
            proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    after = {f["name"]: f for f in _json(cli("feeds", "list", "--json"))}["kev"]
    assert after["status"] == "Stopped", after
    assert after["message"].startswith("interrupted")
    assert after["records"] == before["records"]
    assert sql_rows(db_url, "SELECT COUNT(*) FROM vulnerabilities WHERE source = 'kev'")[0][0] \
        == before["records"]

    # Stuck Running (the run is over, nobody recorded it): --stop marks it.
    from models.db import session_scope
    from patchflow.catalog import vulnfeeds

    (run_id,) = sql_rows(db_url, "SELECT flow_run_id FROM feed_status WHERE name = 'kev'")[0]
    with session_scope(db_url) as session:
        vulnfeeds.begin(session, "kev", run_id)
    r = cli("feeds", "sync", "--stop", "kev")
    assert r.code == 0 and "already ended: marked Stopped" in " ".join(r.out.split())
    assert {f["name"]: f for f in _json(cli("feeds", "list", "--json"))}["kev"]["status"] == \
        "Stopped"
    assert cli("feeds", "sync", "--stop").code == 2


def test_cancel_hook_and_reaper_end_only_their_runs_feeds(cli, home: Path) -> None:
    """A cancelled deployment run's hook (and the start-up reaper, through the same
    vulnfeeds.end_run) ends the feeds that run left Running, and no other."""
    from deployments import hooks
    from models.db import session_scope
    from patchflow.catalog import vulnfeeds

    assert cli("init").code == 0
    with session_scope() as session:
        vulnfeeds.begin(session, "kev", "run-a")
        vulnfeeds.begin(session, "nvd", "run-b")
    hooks.feeds_cancelled(None, SimpleNamespace(id="run-a"), None)
    hooks.feeds_cancelled(None, SimpleNamespace(id="run-a"), None)  # idempotent
    listed = {f["name"]: f for f in _json(cli("feeds", "list", "--json"))}
    assert listed["kev"]["status"] == "Stopped"
    assert listed["kev"]["message"] == "stopped by request (flow run cancelled)"
    assert listed["nvd"]["status"] == "Running" and listed["mozilla"]["status"] == "Never"
    with session_scope() as session:
        assert vulnfeeds.end_run(session, "run-b", "Stopped", "interrupted: died") == ["nvd"]
    listed = {f["name"]: f for f in _json(cli("feeds", "list", "--json"))}
    assert listed["nvd"]["status"] == "Stopped"


# --- feeds: schedule and cycle ---------------------------------------------------------------


def test_feeds_deployment_is_daily_by_default(cli, sqlite_home: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from deployments.build import load_specs
    from patchflow import config

    monkeypatch.setenv("PATCHFLOW_INSTANCE", "hq")
    assert cli("init").code == 0
    (feeds,) = [s for s in load_specs() if s.flow == "feeds"]
    assert feeds.full_name == "patchflow-feeds-sync/feeds@hq" and feeds.parameters == {}
    assert feeds.rrule.endswith("RRULE:FREQ=DAILY;BYHOUR=3;BYMINUTE=0;BYSECOND=0")
    assert set(feeds.tags) == {"patchflow", "feeds", "instance:hq", "patchflow-serve"}
    config.write_config({"feeds": {"sync_at": "22:15"}})
    (feeds,) = [s for s in load_specs() if s.flow == "feeds"]
    assert "BYHOUR=22;BYMINUTE=15" in feeds.rrule
    config.write_config({"feeds": {"sync_at": "off"}})
    assert [s for s in load_specs() if s.flow == "feeds"] == []
    config.write_config({"feeds": {"sync_at": "25:00"}})
    r = cli("deployments", "list")
    assert r.code == 2 and "[feeds] sync_at" in r.err and "Traceback" not in r.err


def _age(db_url: str, name: str, days: int) -> None:
    from sqlalchemy import update

    from models import FeedStatus
    from models.db import session_scope

    with session_scope(db_url) as session:
        session.execute(update(FeedStatus).where(FeedStatus.name == name).values(
            status_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=days)))


def test_cycle_syncs_feeds_older_than_a_day_before_its_scan(
        cli, home: Path, db_url: str, tmp_path: Path) -> None:
    from flows.feeds import sync_stale_feeds

    _prepare(cli, tmp_path)
    fresh = sync_stale_feeds()
    assert fresh["synced"] == [] and "within 24 h" in fresh["reason"]
    _age(db_url, "kev", 2)
    before = {f["name"]: f["timestamp"] for f in _json(cli("feeds", "list", "--json"))}
    assert cli("policies", "add", "Vuln", "--patch-server", "local").code == 0
    r = cli("cycle", "run", "Vuln", "--dry-run", "--json")
    assert r.code in (0, 1), r.err  # the cycle's own outcome is not this test's business
    after = {f["name"]: f for f in _json(cli("feeds", "list", "--json"))}
    assert after["kev"]["status"] == "Successful" and after["kev"]["timestamp"] > before["kev"]
    assert after["nvd"]["timestamp"] == before["nvd"]  # fresh: left alone
    assert after["mozilla"]["timestamp"] == before["mozilla"]
    # A feed never synced is not downloaded by a cycle; a failed one is tried again.
    assert cli("feeds", "set", "nvd", "--source", "none").code == 0
    from models.db import session_scope
    from patchflow.catalog import vulnfeeds

    with session_scope(db_url) as session:
        vulnfeeds.finish(session, "mozilla", "Failed", "boom")
        assert vulnfeeds.stale(session, dt.timedelta(days=1)) == ["mozilla"]
        vulnfeeds.finish(session, "mozilla", "Successful", "ok")
        vulnfeeds.get_feed(session, "kev").status = "Never"
        assert vulnfeeds.stale(session, dt.timedelta(days=1)) == []
