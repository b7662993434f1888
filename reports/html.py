"""HTML form of reports, the run index, the e-mail body and the dashboard page.

Layout lives in jinja2 templates (reports/templates/). Table rows are the exception: they are
escaped and joined here, each cell built once per distinct value of its column, because
rendering 400,000 rows cell by cell through jinja2 took 4.9 s where this takes about 1 s, and
the rows need no logic a template would express better.

Large tables never go into one page: a detail table longer than `page_rows` is split by group
and paged into `<kind>-pages/*.html`, and the report page shows the summary first with an index
of those pages. Every patch name links to the console's patch page when a console URL is
configured, otherwise to its entry in the report's "Patch details" section, which lists every
patch the report names, so each link has a target.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from patchflow.untrusted import http_url
from reports.dashboard import charts
from reports.frames import HIDDEN_IN_HTML, NO_GROUP, Report, Table, group_labels, label

TEMPLATES = Path(__file__).with_name("templates")
PATCH_DETAIL_COLUMNS = ("kb", "package_id", "severity", "category", "restart_required",
                        "release_date", "endpoints")


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Every outside URL put in an href goes through this: only http(s) becomes a link.
    env.filters["http_url"] = http_url
    return env


@dataclass(frozen=True)
class HtmlOptions:
    """How a run's HTML is laid out and linked."""

    generated_at: dt.datetime
    filters: str = "all endpoints and patches"
    console_url: str | None = None
    page_rows: int = 1000  # rows per page; a detail table up to this size stays in the report
    email_rows: int = 200  # detail tables up to this size are shown in the e-mail body
    csv_files: frozenset[str] = field(default_factory=frozenset)  # written next to the HTML
    # A mail's heading and opening lines when a workflow sends the reports (the patch cycle:
    # "Patch cycle of Workstations: completed", its summary), before the reports themselves.
    heading: str = "patchflow reports"
    intro: tuple[str, ...] = ()

    @property
    def generated(self) -> str:
        return f"{self.generated_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC"


def patch_href(patch_id: int, opts: HtmlOptions, doc: str = "") -> str:
    """The console's patch page, or the patch's entry in report document `doc` ('' = this one)."""
    if opts.console_url:
        return f"{opts.console_url.rstrip('/')}/patches/{int(patch_id)}"
    return f"{doc}#patch-{int(patch_id)}"


# --- cells -------------------------------------------------------------------------------------


def _is_datetime(series: pd.Series) -> bool:
    return pd.api.types.is_datetime64_any_dtype(series.dtype)


def _is_number(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
        series.dtype
    )


def _format(values: pd.Series | pd.Index) -> list[str]:
    """Display text of values (no missing ones), escaped."""
    if _is_datetime(values):  # type: ignore[arg-type]
        stamps = pd.DatetimeIndex(values)
        if stamps.tz is not None:
            stamps = stamps.tz_convert("UTC").tz_localize(None)
        raw = np.datetime_as_string(stamps.to_numpy(dtype="datetime64[m]"), unit="m").tolist()
        return ["" if t == "NaT" else t.replace("T", " ") for t in raw]
    if pd.api.types.is_float_dtype(values.dtype):
        return ["" if v != v else f"{v:,.1f}" for v in values.tolist()]
    if _is_number(values):  # type: ignore[arg-type]
        return [f"{v:,}" for v in values.tolist()]
    return [escape(str(v), quote=False) for v in values.tolist()]


def _texts(series: pd.Series) -> list[str]:
    """Display text per row; missing values are empty. Formats each distinct value once."""
    if _is_datetime(series):
        return _format(series)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    texts = np.array([*_format(uniques), ""], dtype=object)  # code -1 (missing) → ""
    return texts[codes].tolist()


def _cells(frame: pd.DataFrame, column: str, opts: HtmlOptions, doc: str) -> list[str]:
    """The <td> of `column` for every row. Cells are built per distinct value and picked by
    code: a 400,000-row column usually has a few thousand distinct values."""
    series = frame[column]
    if column == "title" and "patch_id" in frame.columns:
        codes, uniques = pd.factorize(frame["patch_id"])
        first = pd.Series(np.arange(len(codes))).groupby(codes).first().to_numpy()
        titles = _format(series.iloc[first].fillna(""))
        cells = [f'<td><a href="{escape(patch_href(pid, opts, doc))}">{title}</a></td>'
                 for pid, title in zip(uniques.tolist(), titles, strict=True)]
        return np.array(cells, dtype=object)[codes].tolist() if len(codes) else []
    if _is_datetime(series):
        return [f"<td>{t}</td>" for t in _format(series)]
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    texts = _format(uniques)
    if column == "severity":
        cells = [f'<td class="sev sev-{t.lower()}">{t}</td>' for t in texts]
    elif _is_number(series):
        cells = [f'<td class="n">{t}</td>' for t in texts]
    else:
        cells = [f"<td>{t}</td>" for t in texts]
    return np.array([*cells, "<td></td>"], dtype=object)[codes].tolist()


# A detail table (one row per endpoint × patch) repeats each patch's own attributes on every
# row; they are in the report's "Patch details" entry its linked title leads to (and in the
# CSV), so the HTML leaves them out and the table fits the page width.
DETAIL_DROP = ("kb", "package_id", "category", "restart_required", "release_date")


def detail_drop(table: Table) -> tuple[str, ...]:
    if table.detail and "title" in table.frame.columns and "patch_id" in table.frame.columns:
        return DETAIL_DROP
    return ()


def html_columns(frame: pd.DataFrame, drop: tuple[str, ...] = ()) -> list[str]:
    return [c for c in frame.columns if c not in HIDDEN_IN_HTML and c not in drop]


def _head(frame: pd.DataFrame, columns: list[str]) -> str:
    head = []
    for column in columns:
        text = label(column) + (" (UTC)" if _is_datetime(frame[column]) else "")
        cls = ' class="n"' if _is_number(frame[column]) else ""
        head.append(f'<th scope="col"{cls}>{escape(text)}</th>')
    return "<tr>" + "".join(head) + "</tr>"


def _rows(frame: pd.DataFrame, columns: list[str], opts: HtmlOptions, doc: str) -> list[str]:
    """One '<tr>…</tr>' string per row of the frame, in order."""
    if frame.empty:
        return []
    cells = [_cells(frame, column, opts, doc) for column in columns]
    return ["<tr>" + "".join(row) + "</tr>" for row in zip(*cells, strict=True)]


def _table(head: str, rows: list[str], caption: str | None = None) -> Markup:
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    body = "\n".join(rows)
    return Markup(
        f'<div class="scroll"><table>{cap}<thead>{head}</thead><tbody>\n{body}\n</tbody>'
        "</table></div>"
    )


def _linked_ids(frame: pd.DataFrame, columns: list[str]) -> set[int]:
    if "title" in columns and "patch_id" in frame.columns and len(frame):
        return set(frame["patch_id"].astype("int64").tolist())
    return set()


def render_table(
    frame: pd.DataFrame,
    opts: HtmlOptions,
    doc: str = "",
    caption: str | None = None,
    drop: tuple[str, ...] = (),
) -> tuple[Markup, set[int]]:
    """A <table> of the frame's visible columns, patch titles linked; returns the patch ids
    it links to, so the caller can make sure each has a target."""
    columns = html_columns(frame, drop)
    html = _table(_head(frame, columns), _rows(frame, columns, opts, doc), caption)
    return html, _linked_ids(frame, columns)


def render_glossary(
    patches: pd.DataFrame, only: set[int] | None = None, count_label: str = "Endpoints"
) -> Markup:
    """The "Patch details" list: one `id="patch-N"` entry per patch, the in-report link target."""
    if only is not None:
        patches = patches[patches["patch_id"].isin(only)]
    if patches.empty:
        return Markup("")
    columns = [c for c in PATCH_DETAIL_COLUMNS if c in patches.columns]
    texts = {c: _texts(patches[c]) for c in ("title", *columns)}
    rows = []
    for i, pid in enumerate(patches["patch_id"].astype("int64").tolist()):
        facts = "".join(
            f"<dt>{escape(count_label if c == 'endpoints' else label(c))}</dt>"
            f"<dd>{texts[c][i] or '—'}</dd>"
            for c in columns
        )
        rows.append(
            f'<li id="patch-{pid}"><strong>{texts["title"][i]}</strong><dl>{facts}</dl></li>'
        )
    return Markup('<ol class="patches">' + "\n".join(rows) + "</ol>")


# --- report documents --------------------------------------------------------------------------


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-") or "x"


@dataclass
class _Page:
    path: str
    table: Table
    group: str | None
    number: int
    count: int
    size: int


@dataclass
class _Part:
    """One group's rows of a paged table (positions into the table's frame) and its pages."""

    group: str | None
    positions: np.ndarray
    pages: list[_Page]

    @property
    def rows(self) -> int:
        return len(self.positions)


@dataclass
class _Section:
    table: Table
    inline: list[tuple[str | None, Markup]]  # (group heading or None, table html)
    pages: list[_Part]

    @property
    def csv(self) -> str:
        return f"{self.table.name}.csv"


def _split(frame: pd.DataFrame, by_group: bool) -> list[tuple[str | None, str, np.ndarray]]:
    """(group label, file slug, row positions) per group, in name order, '(no group)' last;
    one part with every row when not split."""
    if not by_group or frame.empty:
        return [(None, "all", np.arange(len(frame)))]
    labels = group_labels(frame["group"])
    parts = []
    for name, positions in labels.groupby(labels, sort=False).indices.items():
        gid = frame["group_id"].iloc[positions[0]] if "group_id" in frame.columns else None
        if name == NO_GROUP:
            slug = "nogroup"
        elif gid is not None and gid is not pd.NA:
            slug = f"g{int(gid)}"
        else:
            slug = _slug(str(name))
        parts.append((str(name), slug, np.sort(positions)))
    parts.sort(key=lambda p: (p[0] == NO_GROUP, (p[0] or "").lower()))
    return parts


def _plan(report: Report, opts: HtmlOptions) -> list[_Section]:
    """Which tables stay in the report page and how the long ones are paged."""
    sections = []
    for table in report.tables:
        section = _Section(table, [], [])
        frame = table.frame
        split = table.detail and table.split_by_group
        drop = ("group",) if split else ()  # the heading names the group
        drop += detail_drop(table)
        if not table.detail or len(frame) <= opts.page_rows:
            parts = _split(frame, split)
            for group, _, positions in parts:
                html, _ids = render_table(frame.iloc[positions], opts, drop=drop)
                section.inline.append((group if len(parts) > 1 else None, html))
        else:
            for group, slug, positions in _split(frame, split):
                count = -(-len(positions) // opts.page_rows)
                pages = [
                    _Page(
                        path=f"{report.kind}-pages/{table.name}-{slug}-{n:04d}.html",
                        table=table,
                        group=group,
                        number=n,
                        count=count,
                        size=min(opts.page_rows, len(positions) - (n - 1) * opts.page_rows),
                    )
                    for n in range(1, count + 1)
                ]
                section.pages.append(_Part(group, positions, pages))
        sections.append(section)
    return sections


def render_report(report: Report, opts: HtmlOptions) -> Iterator[tuple[str, str]]:
    """(relative path, html) for the report page, then each detail page, lazily: rows are
    rendered one group at a time, so a 400,000-row report never sits in memory as HTML."""
    sections = _plan(report, opts)
    env = environment()
    main = f"{report.kind}.html"
    yield main, env.get_template("report.html").render(
        report=report,
        opts=opts,
        sections=sections,
        glossary=render_glossary(report.patches, count_label=report.count_label),
        csv_files=opts.csv_files,
    )
    page_template = env.get_template("page.html")
    for section in sections:
        frame = section.table.frame
        drop = ("group",) if section.table.split_by_group else ()
        drop += detail_drop(section.table)
        columns = html_columns(frame, drop)
        head = _head(frame, columns)
        for part in section.pages:
            rows = _rows(frame.iloc[part.positions], columns, opts, f"../{main}")
            for index, page in enumerate(part.pages):
                start = (page.number - 1) * opts.page_rows
                yield page.path, page_template.render(
                    report=report,
                    opts=opts,
                    page=page,
                    main=main,
                    table_html=_table(head, rows[start : start + opts.page_rows]),
                    prev=part.pages[index - 1].path.split("/")[-1] if index else None,
                    next=(part.pages[index + 1].path.split("/")[-1]
                          if index + 1 < len(part.pages) else None),
                    first_row=start + 1,
                )


def render_index(
    reports: Sequence[Report], opts: HtmlOptions, files: Sequence[tuple[str, int | None]]
) -> str:
    """The run's front page: each report's headline figures and every file written."""
    return environment().get_template("index.html").render(
        reports=reports, opts=opts, files=files
    )


def render_email(reports: Sequence[Report], opts: HtmlOptions, location: str | None) -> str:
    """A self-contained HTML body: headlines and summaries; detail tables only when short.

    Mail clients show one document, so links go to the console or to the details section of
    the mail itself, and long tables are left to the attached CSV.
    """
    blocks = []
    linked: set[int] = set()
    for report in reports:
        tables = []
        for table in report.tables:
            if table.detail and len(table.frame) > opts.email_rows:
                tables.append((table, None))
                continue
            html, ids = render_table(table.frame, opts)
            linked |= ids
            tables.append((table, html))
        blocks.append((report, tables))
    patches = [r.patches for r in reports if not r.patches.empty and "title" in r.patches]
    glossary = Markup("")
    if patches and linked and not opts.console_url:
        merged = pd.concat(patches, ignore_index=True).drop_duplicates("patch_id")
        glossary = render_glossary(merged, linked)
    return environment().get_template("email.html").render(
        blocks=blocks, opts=opts, location=location, glossary=glossary
    )


def render_dashboard(dashboard: dict[str, Any], console_url: str | None = None) -> str:
    """The dashboard page: inline SVG bar charts plus the same figures as tables."""
    return environment().get_template("dashboard.html").render(
        data=dashboard, charts=charts(dashboard), console_url=console_url
    )
