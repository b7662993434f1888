"""Text from agents and upstreams is data wherever the CLI and the reports show it: plain text on
the terminal, formula-safe in every CSV; and a mistyped command line is one line and exit code
2, never a traceback."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from models.db import get_engine
from patchflow import config
from patchflow.untrusted import csv_cell, http_url, json_terminal, strip_controls, terminal_text
from tests.support.report_seed import seed_home

PATCHFLOW = Path(sys.executable).with_name("patchflow")
# An OSC 8 hyperlink, a screen clear, a bell, a C1 CSI, a window title and Rich markup.
HOSTILE = ("Windows\x1b]8;;https://evil.example/\x07 11\x1b]8;;\x07\x1b[2J\x07\x9b31m"
           "\x1b]0;pwned\x07 [link=https://evil.example/]Pro[/link] [bold]x[/bold]")
FORMULA = "=2+5+cmd|' /C calc'!A0"


def _raw_controls(text: str) -> list[str]:
    """Control characters in output other than the line breaks a printer writes itself."""
    return [c for c in text if (ord(c) < 32 and c not in "\n") or 0x7F <= ord(c) <= 0x9F]


# --- the pure rules ----------------------------------------------------------------------------


def test_terminal_text_is_plain() -> None:
    shown = terminal_text(HOSTILE)
    assert _raw_controls(shown) == []
    assert "\\[link=https://evil.example/]" in shown  # escaped: Rich prints it as written
    assert terminal_text(None) == "" and terminal_text(42) == "42"
    assert strip_controls("a\tb\r\nc\u202ed") == "a b  cd"
    assert strip_controls("one\ntwo\x1b", keep_newlines=True) == "one\ntwo"
    assert json.loads(json_terminal(json.dumps("a\x9bb\x7f", ensure_ascii=False))) == "a\x9bb\x7f"
    assert "\x9b" not in json_terminal(json.dumps("a\x9bb", ensure_ascii=False))


def test_csv_cell_neutralises_formulas_only_in_text() -> None:
    for text in (FORMULA, "+1", "-1+2", "@SUM(A1)", "\t=1", "\r=1"):
        assert csv_cell(text) == "'" + text
    for value in ("7-Zip", "KB5034123", "", "a=b", -3, -2.5, 0, None, True):
        assert csv_cell(value) == value


def test_http_url_allows_only_http_and_https() -> None:
    assert http_url("https://vendor.example/x?y=1") == "https://vendor.example/x?y=1"
    assert http_url("HTTP://vendor.example") == "HTTP://vendor.example"
    for bad in ("javascript:alert(1)", " JavaScript:alert(1)", "java\tscript:alert(1)",
                "data:text/html,<script>", "vbscript:x", "//evil.example", "https:///x",
                "file:///etc/passwd", "", None, 5):
        assert http_url(bad) is None, bad


def test_report_environment_filters_urls() -> None:
    from reports.html import environment

    template = environment().from_string(
        '{% if u | http_url %}<a href="{{ u | http_url }}">x</a>{% else %}{{ u }}{% endif %}')
    assert template.render(u="javascript:alert(1)") == "javascript:alert(1)"
    assert template.render(u="https://a.example/") == '<a href="https://a.example/">x</a>'


# --- the CLI on agent-supplied text ------------------------------------------------------------


def _hostile_fleet() -> None:
    """The report fleet with an endpoint's OS name and a patch title an attacker chose (written
    straight into the database: whatever the agent API accepts, the printers must cope)."""
    seeded = seed_home()
    with get_engine(config.database_url()).begin() as conn:
        conn.execute(sa.text("UPDATE endpoints SET os_name = :n"), {"n": HOSTILE})
        conn.execute(sa.text("UPDATE patches SET title = :t WHERE id = :i"),
                     {"t": FORMULA, "i": seeded.patches["7zip"]})
        conn.execute(sa.text("UPDATE patches SET title = :t WHERE id = :i"),
                     {"t": "[link=https://evil.example/]KB[/link]\x1b[2J",
                      "i": seeded.patches["cu-jan"]})


def test_endpoints_list_prints_agent_text_plain(cli, sqlite_home: Path,  # type: ignore[no-untyped-def]
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from cli import common

    monkeypatch.setattr(common.console, "width", 1000)  # one line per row: nothing folds
    _hostile_fleet()
    r = cli("endpoints", "list")
    assert r.code == 0, r.err
    assert _raw_controls(r.out) == []
    # Markup is shown as written, not applied.
    assert "[link=https://evil.example/]Pro[/link] [bold]x[/bold]" in r.out
    r = cli("patches", "list")
    assert r.code == 0, r.err
    assert _raw_controls(r.out) == []
    # JSON keeps the value (C0 as \u escapes by json, C1 by us) and stays parseable.
    r = cli("endpoints", "list", "--json")
    assert r.code == 0 and _raw_controls(r.out) == []
    assert {row["os_name"] for row in json.loads(r.out)} == {HOSTILE}


def test_terminal_gets_no_live_escape_or_link(sqlite_home: Path) -> None:
    """Through the real console script on a colour terminal, where Rich would render
    `[link=...]` as a live OSC 8 hyperlink."""
    _hostile_fleet()
    env = {**os.environ, "FORCE_COLOR": "1", "TTY_COMPATIBLE": "1", "COLUMNS": "400"}
    run = subprocess.run([str(PATCHFLOW), "endpoints", "list"], capture_output=True, text=True,
                         env=env, timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    out = run.stdout
    assert "\x1b[" in out  # colours are on: this is what a terminal gets
    assert "\x1b]" not in out  # no OSC at all: no hyperlink, no window title
    assert "\x07" not in out and "\x9b" not in out and "\x1b[2J" not in out
    assert "evil.example" in out  # the text is there, as text


def test_csv_cells_are_formula_safe(cli, sqlite_home: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _hostile_fleet()
    r = cli("missing", "--csv")
    assert r.code == 0, r.err
    rows = list(csv.DictReader(io.StringIO(r.out)))
    titles = {row["title"] for row in rows}
    assert "'" + FORMULA in titles and FORMULA not in titles
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), value
    r = cli("patches", "list", "--csv")
    assert r.code == 0, r.err
    assert "'" + FORMULA in {row["title"] for row in csv.DictReader(io.StringIO(r.out))}

    from patchflow.reporting.service import (
        KINDS,
        build_reports,
        html_options,
        load_frames,
        write_files,
    )
    from patchflow.scanning.missing_query import MissingFilters

    filters = MissingFilters().normalized()
    reports = build_reports(load_frames(filters, list(KINDS)), list(KINDS))
    names = {f"{t.name}.csv" for rep in reports for t in rep.tables}
    opts = html_options(pd.Timestamp("2024-03-20T12:00Z").to_pydatetime(), filters, 50, names)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_files(reports, run_dir, ["csv"], opts)
    for path in run_dir.glob("*.csv"):
        for row in csv.reader(io.StringIO(path.read_text(encoding="utf-8"))):
            for value in row:
                assert not value.startswith(("=", "+", "@", "\t", "\r")), (path.name, value)
                if value.startswith("-"):
                    float(value)  # only numbers may start with a minus sign
    missing = pd.read_csv(run_dir / "missing.csv", keep_default_na=False)
    assert "'" + FORMULA in set(missing["title"])


def test_report_csv_keeps_negative_numbers_numbers() -> None:
    from reports.csv import csv_frame

    frame = pd.DataFrame({
        "name": [FORMULA, "ok", None, "-x", "@SUM(1)"],
        "delta": [-1, 2, 3, -4, 5],
        "ratio": [-0.5, 1.0, float("nan"), 2.0, -3.25],
        "kind": pd.Categorical(["+a", "b", "b", "+a", "c"]),
    })
    out = csv_frame(frame)
    assert out["name"].tolist() == ["'" + FORMULA, "ok", None, "'-x", "'@SUM(1)"]
    assert out["delta"].tolist() == [-1, 2, 3, -4, 5] and out["delta"].dtype == frame["delta"].dtype
    assert out["ratio"].dtype == frame["ratio"].dtype
    assert out["kind"].tolist() == ["'+a", "b", "b", "'+a", "c"]
    text = out.to_csv(index=False, lineterminator="\n")
    assert "\n'=2+5+cmd|' /C calc'!A0,-1,-0.5,'+a\n" in text
    untouched = pd.DataFrame({"name": ["a", "b"]})
    assert csv_frame(untouched) is untouched


# --- usage errors ------------------------------------------------------------------------------

USAGE_ERRORS = [
    (["nosuch"], "No such command 'nosuch'"),
    (["server", "list", "--bogus"], "No such option: --bogus"),
    (["server", "schedule", "s1"], "Missing option '--frequency'"),
    (["server", "list", "--sort"], "requires an argument"),
    (["server", "add", "s1", "--port", "many"], "Invalid value for '--port'"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS)
def test_usage_errors_in_process(cli, sqlite_home: Path, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    r = cli(*args)
    assert r.code == 2
    assert r.err.startswith("error: ") and message in r.err
    assert r.err.count("\n") == 1 and "Traceback" not in r.err
    assert r.out == ""


def test_usage_errors_through_the_console_script(sqlite_home: Path) -> None:
    for args, message in USAGE_ERRORS[:3]:
        run = subprocess.run([str(PATCHFLOW), *args], capture_output=True, text=True,
                             timeout=300, check=False)
        assert run.returncode == 2, (args, run.stderr)
        assert run.stderr.startswith("error: ") and message in run.stderr, run.stderr
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    # Help is still help.
    run = subprocess.run([str(PATCHFLOW), "server", "--help"], capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0 and "schedule" in run.stdout
