"""Many rows inserted at the driver: the agents' inventories and a scan's missing patches.

`session.execute(insert(table), rows)` spends more time in SQLAlchemy's per-row parameter
processing (a type processor per value, a dict per row) than SQLite spends inserting, and on
MariaDB PyMySQL then escapes every value in Python. These write plain tuples whose values are
already in the driver's form (`day_param`, `stamp`), in one statement per table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import Integer, Table
from sqlalchemy.orm import Session

# One JSON_TABLE statement carries at most this much JSON (twice that as hex in the statement),
# like PyMySQL's own executemany, which splits its multi-row INSERTs at about 1 MB.
_JSON_CHUNK = 512 * 1024
_JSON_TABLE_SQL: dict[tuple[str, tuple[str, ...]], tuple[str, str]] = {}


def insert_rows(session: Session, table: Table, columns: Sequence[str],
                rows: list[tuple[Any, ...]]) -> None:
    """The rows, in their order, by the fastest way the database has: JSON_TABLE on MariaDB,
    executemany on SQLite. Values are text, numbers, None, dates or `stamp`s, never bytes."""
    if session.get_bind().dialect.name == "mysql":
        json_insert(session, table, columns, rows)
    else:
        executemany_insert(session, table, columns, rows)


def executemany_insert(session: Session, table: Table, columns: Sequence[str],
                       rows: list[tuple[Any, ...]]) -> None:
    """One executemany at the driver, with the dialect's placeholders (any values, bytes
    included)."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
           f"VALUES ({', '.join([mark] * len(columns))})")
    connection.exec_driver_sql(sql, rows)


def json_insert(session: Session, table: Table, columns: Sequence[str],
                rows: list[tuple[Any, ...]]) -> None:
    """MariaDB/MySQL: the rows as one JSON array expanded by JSON_TABLE, in their order.

    PyMySQL's executemany escapes every value in Python (str.translate per string, a function
    call per value): for an upload of 200 programs most of the server's CPU went there, and
    40,000 missing patches took 0.2 s of it per 8,000 rows. orjson writes the array in C and
    the statement carries it as a hex literal, which needs no escaping and cannot break out of
    the statement whatever the text holds. The JSON_TABLE columns are wide text, so converting
    and checking each value against its column is the INSERT's, as for the plain rows (dates
    go as YYYY-MM-DD, which orjson writes for a date).
    """
    if not rows:
        return
    text = orjson.dumps(rows)
    if len(text) > _JSON_CHUNK and len(rows) > 1:
        # Slices of the average size that fits (fewer than all the rows); one made of longer
        # rows than the average is split again.
        step = max(1, len(rows) * _JSON_CHUNK // len(text))
        for start in range(0, len(rows), step):
            json_insert(session, table, columns, rows[start:start + step])
        return
    head, tail = _json_table_sql(session, table, tuple(columns))
    session.connection().exec_driver_sql(f"{head}x'{text.hex()}'{tail}")


def _json_table_sql(session: Session, table: Table, columns: tuple[str, ...]) -> tuple[str, str]:
    """The statement around the hex literal, built once per table (no `%` in it: PyMySQL would
    read one as a placeholder)."""
    key = (table.name, columns)
    sql = _JSON_TABLE_SQL.get(key)
    if sql is None:
        quote = session.get_bind().dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in columns)
        paths = ", ".join(
            f"{quote(c)} {'BIGINT' if isinstance(table.c[c].type, Integer) else 'LONGTEXT'} "
            f"PATH '$[{i}]'" for i, c in enumerate(columns))
        sql = (f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} FROM JSON_TABLE("
               f"CONVERT(",
               f" USING utf8mb4), '$[*]' COLUMNS (`json_row` FOR ORDINALITY, {paths})) "
               f"AS j ORDER BY `json_row`")
        _JSON_TABLE_SQL[key] = sql
    return sql


def day_param(session: Session) -> Callable[[dt.date | None], Any]:
    """A Date column's value: SQLite keeps dates as ISO text (what SQLAlchemy's Date type writes
    there); PyMySQL and orjson take date objects as they are."""
    if session.get_bind().dialect.name == "sqlite":
        return lambda day: day.isoformat() if day is not None else None
    return lambda day: day


def stamp(value: dt.datetime) -> str:
    """A UTCDateTime column's value, on both databases: naive UTC as the text SQLAlchemy's
    SQLite DateTime writes (microseconds always), which MariaDB reads into a DATETIME as it
    reads PyMySQL's own literal."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")
