"""HTML and CSV output: links resolve, rows are all there, escaping holds, dates are ISO.

These run the writer the flow's task uses (patchflow.reporting.service.write_files) without
Prefect, on SQLite; the flow itself is exercised in test_reports_flow.py.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from models.db import session_scope
from patchflow import config
from patchflow.catalog.vuln_query import load_rated_missing
from patchflow.reporting.report_data import load_dashboard
from patchflow.reporting.service import KINDS, build_reports, html_options, load_frames, write_files
from patchflow.scanning.missing_query import MissingFilters
from reports.html import HtmlOptions, render_dashboard, render_email
from tests.support.report_seed import seed_home

GENERATED = dt.datetime(2024, 3, 21, 8, 30, tzinfo=dt.UTC)
ISO_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
ISO_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class _Links(HTMLParser):
    """ids, hrefs, and resources a page would fetch (scripts, stylesheets, images, fonts)."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.fetches: list[str] = []
        self.title_links = 0
        self._in_td = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"] or "")
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"] or "")
        if tag in ("script", "img", "iframe") or (tag == "link" and values.get("href")):
            self.fetches.append(tag)
        if values.get("src"):
            self.fetches.append(values["src"] or "")


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def check_links(run_dir: Path) -> dict[str, int]:
    """Every relative href points at an existing file, and every #fragment at an existing id in
    that file. Returns counts by kind of link."""
    pages = {p.resolve(): _parse(p) for p in run_dir.rglob("*.html")}
    counts = {"pages": len(pages), "local": 0, "fragment": 0, "external": 0}
    for path, parsed in pages.items():
        assert not parsed.fetches, f"{path} loads external resources: {parsed.fetches}"
        for href in parsed.hrefs:
            if re.match(r"^[a-z]+:", href):
                counts["external"] += 1
                continue
            target, _, fragment = href.partition("#")
            file = (path.parent / target).resolve() if target else path
            assert file.exists(), f"{path.name}: broken link {href}"
            counts["local"] += 1
            if fragment:
                assert file.suffix == ".html", href
                assert fragment in pages[file].ids, f"{path.name}: no #{fragment} in {file.name}"
                counts["fragment"] += 1
    return counts


def _run(tmp_path: Path, page_rows: int, filters: MissingFilters | None = None,
         formats: tuple[str, ...] = ("csv", "html")) -> tuple[Path, list, list]:
    filters = (filters or MissingFilters()).normalized()
    frames = load_frames(filters, list(KINDS))
    reports = build_reports(frames, list(KINDS))
    names = {f"{t.name}.csv" for r in reports for t in r.tables} if "csv" in formats else set()
    opts = html_options(GENERATED, filters, page_rows, names)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    files = write_files(reports, run_dir, list(formats), opts)
    return run_dir, files, reports


def test_paged_html_links_all_resolve(sqlite_home: Path, tmp_path: Path) -> None:
    seed_home()
    run_dir, files, reports = _run(tmp_path, page_rows=7)
    counts = check_links(run_dir)
    assert counts["external"] == 0  # no console URL configured: links stay in the report
    missing = reports[0].table("missing").frame
    # Paged per group: the rows of all pages add up to the table, each row once.
    page_rows = 0
    linked = 0
    for page in sorted((run_dir / "missing-pages").glob("*.html")):
        text = page.read_text(encoding="utf-8")
        page_rows += text.count("<tr><td>")
        linked += len(re.findall(r'<a href="\.\./missing\.html#patch-\d+">', text))
    assert page_rows == len(missing)
    assert linked == len(missing)  # every patch name on every row is a link
    assert counts["fragment"] >= len(missing)
    # Summary first: the headline figures come before any table.
    main = (run_dir / "missing.html").read_text(encoding="utf-8")
    assert main.index('class="figures"') < main.index("<table")
    assert {"index.html", "missing.html", "missing.csv"} <= {name for name, _ in files}


def test_small_report_is_one_page_with_groups(sqlite_home: Path, tmp_path: Path) -> None:
    seed_home()
    run_dir, _, reports = _run(tmp_path, page_rows=5000)
    assert not (run_dir / "missing-pages").exists()
    check_links(run_dir)
    main = (run_dir / "missing.html").read_text(encoding="utf-8")
    for group in ("HQ", "Finance", "Payroll", "Branch Zürich", "(no group)"):
        assert f"<h3>{group}</h3>" in main
    # Every patch named in the report has its details entry.
    for pid in reports[0].table("missing").frame["patch_id"].unique():
        assert f'id="patch-{pid}"' in main


def test_console_url_links(sqlite_home: Path, tmp_path: Path) -> None:
    seed_home()
    config.write_config({"console": {"url": "https://patch.corp.example:6201/console/"}})
    run_dir, _, _reports = _run(tmp_path, page_rows=10)
    check_links(run_dir)
    text = "".join(p.read_text(encoding="utf-8") for p in run_dir.rglob("*.html"))
    hrefs = re.findall(r'href="([^"]*patches/[^"]*)"', text)
    assert hrefs and all(re.fullmatch(r"https://patch\.corp\.example:6201/console/patches/\d+", h)
                         for h in hrefs)
    assert not re.search(r'href="#patch-\d', text) and "missing.html#patch-" not in text


def test_escaping(sqlite_home: Path, tmp_path: Path) -> None:
    seed_home()
    run_dir, _, _ = _run(tmp_path, page_rows=5000)
    text = (run_dir / "missing.html").read_text(encoding="utf-8")
    assert "pc-ÄÖ-&lt;0&gt;&amp;" in text and "<0>" not in text
    assert "3.5 &amp; 4.8.1 &lt;Cumulative&gt; Update" in text


def test_csv_files(cli, sqlite_home: Path, tmp_path: Path) -> None:
    seed_home()
    filters = MissingFilters(severity=("Critical", "Moderate"), group="HQ", subgroups=True)
    run_dir, files, reports = _run(tmp_path, page_rows=50, filters=filters,
                                   formats=("csv",))
    assert not list(run_dir.glob("*.html"))
    with session_scope() as session:
        expected = load_rated_missing(session, filters)
    for report in reports:
        for table in report.tables:
            path = run_dir / f"{table.name}.csv"
            raw = path.read_bytes()
            assert not raw.startswith(b"\xef\xbb\xbf")  # UTF-8 without BOM
            rows = list(csv.reader(io.StringIO(raw.decode("utf-8"))))
            assert rows[0] == list(table.frame.columns), path.name
            assert len(rows) - 1 == len(table.frame), path.name
            for column in ("detected_at", "installed_at", "finished_at"):
                if column in rows[0]:
                    i = rows[0].index(column)
                    assert all(ISO_INSTANT.match(r[i]) for r in rows[1:] if r[i]), column
            if "release_date" in rows[0]:
                i = rows[0].index("release_date")
                assert all(ISO_DAY.match(r[i]) for r in rows[1:] if r[i])
    missing = pd.read_csv(run_dir / "missing.csv", encoding="utf-8", keep_default_na=False)
    assert len(missing) == len(expected) > 0
    assert missing["endpoint"].tolist() == expected["endpoint"].tolist()
    assert missing["detected_at"].tolist() == [
        t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in expected["detected_at"]]
    assert dict(files)["missing.csv"] == len(expected)
    # ... and what `patchflow missing --json` prints for the same filters.
    r = cli("missing", "--json", "--severity", "Critical,Moderate", "--group", "HQ",
            "--subgroups")
    assert r.code == 0, r.err
    listed = json.loads(r.out)
    assert len(listed) == len(missing)
    assert [(row["endpoint"], row["patch_id"]) for row in listed] == list(
        zip(missing["endpoint"], missing["patch_id"], strict=True))


def test_email_body_links_resolve_inside_the_mail(sqlite_home: Path, tmp_path: Path) -> None:
    seed_home()
    filters = MissingFilters().normalized()
    reports = build_reports(load_frames(filters, list(KINDS)), list(KINDS))
    opts = HtmlOptions(generated_at=GENERATED, email_rows=30)
    body = tmp_path / "mail.html"
    body.write_text(render_email(reports, opts, "/srv/reports/x"), encoding="utf-8")
    counts = check_links(tmp_path)
    assert counts["fragment"] > 0 and counts["external"] == 0
    text = body.read_text(encoding="utf-8")
    assert "rows: see missing.csv in /srv/reports/x" in text  # too long for a mail body
    assert "<style>" in text and "<script" not in text


@pytest.mark.parametrize("console", [None, "https://console.example"])
def test_dashboard_page(sqlite_home: Path, tmp_path: Path, console: str | None) -> None:
    seed_home()
    with session_scope() as session:
        data = load_dashboard(session)
    page = tmp_path / "dashboard.html"
    page.write_text(render_dashboard(data, console), encoding="utf-8")
    text = page.read_text(encoding="utf-8")
    parsed = _parse(page)
    assert not parsed.fetches and "@import" not in text and "url(" not in text
    assert text.count("<svg") == 3 and 'role="img"' in text
    for severity, counts in data["missing_by_severity"].items():
        assert f'text-anchor="end">{severity}</text>' in text
        assert f'font-weight="600">{counts["pairs"]:,}</text>' in text
    for value in data["scan_overview"].values():
        assert f'font-weight="600">{value:,}</text>' in text
    # Bars are proportional: the largest pair count has the full width.
    widths = [float(w) for w in re.findall(r'<rect x="130" y="[\d.]+" width="([\d.]+)"', text)]
    assert max(widths[5:10]) == pytest.approx(520 - 130 - 80)
