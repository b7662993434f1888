"""The reporting service: which reports exist, the checks a report request passes before any
work starts, and loading, building, writing and mailing the reports.

Every door that asks for reports (`patchflow report`, the console's Reports page, the weekly
schedule, the patch cycle) goes through here, so a kind, a format or an output folder is
accepted or refused the same way whichever door it came through. Nothing here imports Prefect:
the CLI checks its input without paying for Prefect's start, and the benchmark and tests build
and write reports without a Prefect server. tasks/report.py wraps these functions as the
`patchflow-report` flow's tasks; publishing Prefect artifacts stays there.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from sqlalchemy.orm import Session

from models.db import session_scope
from patchflow import config
from patchflow.catalog import storage
from patchflow.catalog.vuln_query import load_rated_missing
from patchflow.errors import UserError
from patchflow.reporting import mail
from patchflow.reporting.report_data import (
    last_report_at,
    load_endpoints,
    load_installed,
    load_outcomes,
)
from patchflow.scanning.missing_query import MissingFilters
from reports.compliance import build_compliance
from reports.csv import CSV_OPTIONS, csv_tables
from reports.frames import RATED_MISSING_COLUMNS, Report
from reports.html import HtmlOptions, render_email, render_index, render_report
from reports.installed import build_installed
from reports.missing import build_missing
from reports.patch_view import build_patch_view

# The report kinds in the order they are built, listed and mailed, with the console's label for
# each: the one table every door, the schedule and the report_runs names are checked against.
KIND_LABELS: dict[str, str] = {
    "missing": "Missing patches",
    "installed": "Installed patches",
    "patches": "Patch view",
    "compliance": "Compliance",
}
KINDS: tuple[str, ...] = tuple(KIND_LABELS)
FORMATS: tuple[str, ...] = ("html", "csv")
DEFAULT_PAGE_ROWS = 1000
ARTIFACT_ROWS = 500  # a table artifact is for reading in the UI; the CSV has the rest


def parse_kinds(value: str | list[str] | None) -> list[str]:
    """'all', names or a mix, as a comma-separated string or a list; returned in KINDS order."""
    items = value.split(",") if isinstance(value, str) else list(value or ["all"])
    kinds: list[str] = []
    for item in (i.strip().lower() for i in items):
        if not item:
            continue
        if item == "all":
            kinds.extend(k for k in KINDS if k not in kinds)
        elif item in KINDS:
            if item not in kinds:
                kinds.append(item)
        else:
            raise UserError(f"unknown report kind {item!r}: use {', '.join(KINDS)} or all")
    if not kinds:
        raise UserError(f"no report kind given: use {', '.join(KINDS)} or all")
    return [k for k in KINDS if k in kinds]


def parse_formats(value: str | list[str] | None) -> list[str]:
    items = value.split(",") if isinstance(value, str) else list(value or FORMATS)
    formats = [i.strip().lower() for i in items if i.strip()]
    for item in formats:
        if item not in FORMATS:
            raise UserError(f"unknown format {item!r}: use html, csv or html,csv")
    if not formats:
        raise UserError("no output format given: use html, csv or html,csv")
    return [f for f in FORMATS if f in formats]


def run_kind(kinds: list[str]) -> str:
    """report_runs.kind: 'all' for the full set, else the kinds joined (fits String(32))."""
    return "all" if set(kinds) == set(KINDS) else ",".join(kinds)


def report_key(run_dir: Path) -> str:
    """Where a run's files are on the shared storage (`[storage] url`): reports/<folder name>."""
    return f"reports/{run_dir.name}"


def output_dir(out: str | Path | None, generated_at: dt.datetime) -> Path:
    """The run's folder: `out`, or PATCHFLOW_HOME/reports/<UTC timestamp>; created and checked
    writable here, so a bad --out fails before any work with one line. So does a shared
    storage that is misconfigured or cannot be reached: the files are copied there."""
    storage.configured()
    if out is None:
        base = config.home() / "reports"
        stamp = generated_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = base / stamp
        n = 2
        while path.exists():
            path = base / f"{stamp}-{n}"
            n += 1
    else:
        path = Path(out).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".patchflow-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise UserError(f"cannot write reports to {path}: it is a file") from None
    except OSError as exc:
        raise UserError(f"cannot write reports to {path}: {exc.strerror or exc}") from None
    return path


def html_options(
    generated_at: dt.datetime, filters: MissingFilters, page_rows: int, csv_files: set[str]
) -> HtmlOptions:
    console = config.setting("console", "url")
    if console and not str(console).startswith(("https://", "http://")):
        raise UserError(f"[console] url in patchflow.toml must start with https:// or http://, "
                        f"not {str(console)!r}")
    return HtmlOptions(
        generated_at=generated_at,
        filters=filters.describe(),
        console_url=str(console) if console else None,
        page_rows=page_rows,
        csv_files=frozenset(csv_files),
    )


@dataclass(frozen=True)
class ReportRequest:
    """A report run, every input checked: what the report flow is started with."""

    kinds: list[str]
    formats: list[str]
    filters: MissingFilters
    run_dir: Path


def preflight(session: Session, kinds: str | list[str] | None, formats: str | list[str] | None,
              filters: MissingFilters, out: str | Path | None, page_rows: int) -> ReportRequest:
    """Everything a report run can be refused for, checked before Prefect starts, whichever
    door asked (CLI, console): kinds, formats, the filters' group, `[console] url`, the output
    folder and the shared storage. Each failure is one line (UserError)."""
    kind_list, format_list = parse_kinds(kinds), parse_formats(formats)
    filters = filters.normalized()
    filters.resolve(session)
    generated_at = dt.datetime.now(dt.UTC)
    html_options(generated_at, filters, page_rows, set())
    return ReportRequest(kind_list, format_list, filters, output_dir(out, generated_at))


@dataclass
class ReportFrames:
    """Everything the builders need, loaded in one pass over the database."""

    missing: pd.DataFrame | None = None
    installed: pd.DataFrame | None = None
    outcomes: pd.DataFrame | None = None
    endpoints: pd.DataFrame | None = None
    scan_since: dt.datetime | None = None
    counts: dict[str, int] = field(default_factory=dict)


def load_frames(filters: MissingFilters, kinds: list[str]) -> ReportFrames:
    with session_scope() as session:
        frames = ReportFrames()
        frames.missing = load_rated_missing(session, filters)[list(RATED_MISSING_COLUMNS)]
        if {"installed", "patches", "compliance"} & set(kinds):
            frames.installed = load_installed(session, filters)
        if "patches" in kinds:
            frames.outcomes = load_outcomes(session, filters)
        if "compliance" in kinds:
            frames.endpoints = load_endpoints(session, filters)
        if "installed" in kinds and filters.since is None:
            frames.scan_since = last_report_at(session)
    frames.counts = {
        name: len(frame)
        for name, frame in (("missing", frames.missing), ("installed", frames.installed),
                            ("outcomes", frames.outcomes), ("endpoints", frames.endpoints))
        if frame is not None
    }
    return frames


def build_reports(frames: ReportFrames, kinds: list[str]) -> list[Report]:
    """Pure: frames in, reports out, in the order of `kinds`."""
    assert frames.missing is not None
    out: list[Report] = []
    for kind in kinds:
        if kind == "missing":
            out.append(build_missing(frames.missing))
        elif kind == "installed":
            assert frames.installed is not None
            out.append(build_installed(frames.installed, frames.scan_since))
        elif kind == "patches":
            assert frames.installed is not None and frames.outcomes is not None
            out.append(build_patch_view(frames.missing, frames.installed, frames.outcomes))
        elif kind == "compliance":
            assert frames.installed is not None and frames.endpoints is not None
            out.append(build_compliance(frames.endpoints, frames.missing, frames.installed))
    return out


def write_files(
    reports: list[Report],
    run_dir: Path,
    formats: list[str],
    opts: HtmlOptions,
) -> list[tuple[str, int | None]]:
    """Write CSV first (the HTML links to it), then HTML pages one at a time, then the index.

    Returns (file name, rows) for the top-level files; detail pages are counted, not listed.
    """
    files: list[tuple[str, int | None]] = []
    if "csv" in formats:
        for report in reports:
            for name, frame in csv_tables(report):
                frame.to_csv(run_dir / name, **CSV_OPTIONS)
                files.append((name, len(frame)))
    if "html" in formats:
        for report in reports:
            for rel, html in render_report(report, opts):
                path = run_dir / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(html, encoding="utf-8")
                if "/" not in rel:
                    detail = any(t.detail for t in report.tables)
                    files.append((rel, report.detail_rows if detail else None))
        files.sort(key=lambda f: not f[0].endswith(".html"))
        (run_dir / "index.html").write_text(render_index(reports, opts, files), encoding="utf-8")
        files.insert(0, ("index.html", None))
    shared = storage.configured()
    if shared is not None:  # every node's console serves them from there
        shared.put_tree(run_dir, report_key(run_dir))
    return files


def email_reports(
    reports: list[Report],
    run_dir: Path,
    files: list[tuple[str, int | None]],
    recipients: list[str],
    opts: HtmlOptions,
) -> dict[str, Any]:
    """HTML summary body, CSV attachments within the size limit; settings read here so the
    password never travels as an argument."""
    with session_scope() as session:
        settings = mail.load_settings(session)
    if settings is None:
        raise UserError("SMTP is not configured: run `patchflow mail set` first")
    csvs = [run_dir / name for name, _ in files if name.endswith(".csv")]
    attached, left = mail.pick_attachments(csvs, settings.max_attachment_mb)
    body = render_email(reports, opts, str(run_dir))
    kinds = ", ".join(r.title.lower() for r in reports)
    text_lines = [*([opts.heading, *opts.intro, ""] if opts.intro else []),
                  f"patchflow reports ({kinds}), generated {opts.generated}.",
                  f"Selection: {opts.filters}.", f"Files on the server: {run_dir}"]
    for report in reports:
        text_lines.append("")
        text_lines.append(report.title)
        text_lines.extend(f"  {name}: {value}" for name, value in report.headline)
    if left:
        text_lines.append("")
        text_lines.append("Not attached (over the size limit): " + ", ".join(p.name for p in left))
    message = mail.build_message(
        settings.sender,
        recipients,
        # Short enough for one header line: longer ones fold and some clients show the fold.
        opts.heading if opts.intro else f"patchflow reports: {', '.join(r.kind for r in reports)}",
        body,
        "\n".join(text_lines) + "\n",
        [(p.name, p.read_bytes()) for p in attached],
    )
    mail.send_message(settings, message)
    return {"recipients": recipients, "attached": [p.name for p in attached],
            "not_attached": [p.name for p in left]}


def artifact_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    # df.to_dict("records") fails on pandas 3 timestamps; the JSON round trip does not.
    return json.loads(frame.head(ARTIFACT_ROWS).to_json(orient="records", date_format="iso"))


def summary_markdown(
    reports: list[Report],
    run_dir: Path,
    files: list[tuple[str, int | None]],
    opts: HtmlOptions,
    mailed: dict[str, Any] | None = None,
) -> str:
    lines = [f"# patchflow reports, {opts.generated}", "", f"Selection: {opts.filters}", ""]
    if mailed:
        to = ", ".join(mailed["recipients"])
        lines += [f"E-mail to {to}: " + (f"**not sent** ({mailed['error']})" if mailed["error"]
                                         else "sent"), ""]
    for report in reports:
        lines.append(f"## {report.title}")
        lines.extend(f"- {name}: **{value}**" for name, value in report.headline)
        lines.append("")
    lines.append("## Files")
    for name, rows in files:
        count = f" ({rows:,} rows)" if rows is not None else ""
        lines.append(f"- [{name}]({file_link(run_dir, name, opts)}){count}")
    return "\n".join(lines) + "\n"


def file_link(run_dir: Path, name: str, opts: HtmlOptions) -> str:
    """Through the console when `[console] url` is set, so the link opens in any browser
    that can reach the console (and the files may be on the shared storage); a file:// link
    on this machine otherwise."""
    if opts.console_url:
        return (f"{opts.console_url.rstrip('/')}/reports/folder/{quote(run_dir.name)}/files/"
                f"{quote(name)}")
    return (run_dir / name).as_uri()
