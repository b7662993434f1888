"""Helpers every CLI module shares: output in the three forms (table, JSON, CSV) and prompts."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


def print_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(row.get(k)) for k in columns})
    sys.stdout.write(buffer.getvalue())


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return ";".join(str(v) for v in value)
    return "" if value is None else value


def print_table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*["" if cell is None else str(cell) for cell in row])
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
