"""Helpers every CLI module shares: output in the three forms (table, JSON, CSV) and prompts.

Values printed here often come from agents or upstreams (an inventory's OS name, a manifest's
title), so every form goes through patchflow.untrusted: tables and messages as plain text,
JSON without raw C1 controls, CSV cells that no spreadsheet runs as formulas.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from patchflow.untrusted import csv_cell, json_terminal, strip_controls, terminal_text


class PlainConsole(Console):
    """A Rich console that never passes a control character (ESC, BEL, CSI...) on to the
    terminal, whatever string it is given; `plain()` still has to escape markup in values."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(strip_controls(text, keep_newlines=True), **kwargs)


# No emoji codes: `:bomb:` in a manifest's title stays text.
console = PlainConsole(emoji=False)
err_console = PlainConsole(stderr=True, emoji=False)


def plain(value: Any) -> str:
    """A value for an f-string given to `console.print`: shown as written, never as markup or
    terminal control sequences."""
    return terminal_text(value)


def print_json(data: Any) -> None:
    text = json.dumps(data, indent=2, default=str, ensure_ascii=False)
    sys.stdout.write(json_terminal(text) + "\n")


def print_json_line(data: Any) -> None:
    """One compact JSON object on its own line, flushed: the form of streaming commands."""
    text = json.dumps(data, default=str, ensure_ascii=False)
    sys.stdout.write(json_terminal(text) + "\n")
    sys.stdout.flush()


def print_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    # Redirected to a file the CSV keeps its text as is; shown on a terminal, text must not
    # drive it.
    on_terminal = sys.stdout.isatty()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k), on_terminal) for k in columns})
    sys.stdout.write(buffer.getvalue())


def _csv_cell(value: Any, on_terminal: bool = False) -> Any:
    if isinstance(value, list | tuple):
        value = ";".join(str(v) for v in value)
    if value is None:
        return ""
    if on_terminal and isinstance(value, str):
        value = strip_controls(value)
    return csv_cell(value)


def print_table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """Every table the CLI prints goes through here, so every cell is plain text."""
    table = Table(title=None if title is None else terminal_text(title), show_lines=False)
    for column in columns:
        table.add_column(terminal_text(column), overflow="fold")
    for row in rows:
        table.add_row(*[terminal_text(cell) for cell in row])
    console.print(table)


def split_csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


_checked: set[str] = set()


def db_session():  # type: ignore[no-untyped-def]
    """A session on an initialised database (checked once per process and URL)."""
    from models.db import session_scope
    from models.migrate import ensure_current
    from patchflow import config

    url = config.database_url()
    if url not in _checked:
        ensure_current(url)
        _checked.add(url)
    return session_scope(url)
