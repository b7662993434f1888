"""Many rows written and read at the driver: the agents' inventories, a scan's missing
patches, the frames scans and reports read.

`session.execute(insert(table), rows)` spends more time in SQLAlchemy's per-row parameter
processing (a type processor per value, a dict per row) than SQLite spends inserting, and on
MariaDB PyMySQL then escapes every value in Python. These write plain tuples whose values are
already in the database's form (`day`, `stamp`), in one statement per table.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from sqlalchemy import ColumnElement, Executable, Integer, Table, Update, bindparam, case, update
from sqlalchemy.orm import Session

# One statement carries at most this much JSON (twice that as hex in the statement),
# like PyMySQL's own executemany, which splits its multi-row INSERTs at about 1 MB.
_JSON_CHUNK = 512 * 1024
_JSON_INSERT_SQL: dict[tuple[str, str, tuple[str, ...]], tuple[str, str]] = {}


T = TypeVar("T")
IN_LIST = 500  # ids per IN list: far below SQLite's 32,766 parameters, kind to MariaDB


# `update_rows` lists the values it gives each row under this execution option, for listeners
# that read what an UPDATE assigns (patchflow.fleet.agent_cache): its parameters are named per row.
ASSIGNED_ROWS = "patchflow_assigned_rows"


def chunks(items: Sequence[T], size: int = IN_LIST) -> Iterator[list[T]]:
    """`items` in lists of at most `size`: the IN lists (and batches) of bulk statements."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def update_rows(session: Session, table: Table, values: Mapping[int, Mapping[str, Any]],
                same: Mapping[str, Any] | None = None) -> None:
    """Each row of `table` that `values` names by id gets its own values, and all of them
    `same`'s (values, or SQL expressions such as `c + 1`), in one UPDATE per `IN_LIST` rows and
    set of columns: `SET c = CASE WHEN id = :k0 THEN :v0_c ... END ... WHERE id IN (...)`.

    A statement per row is a round trip each on MariaDB, where the writer then waits for the
    GIL after every one while other threads validate uploads (16 endpoint rows took ~57 ms of
    wall time for ~17 ms of CPU). Rows go in id order, the lock order of every writer. Each
    statement shape is built once (SQLAlchemy then caches its compiled form)."""
    same = dict(same or {})
    expressions = tuple((c, v) for c, v in same.items() if isinstance(v, ColumnElement))
    common = {c: v for c, v in same.items() if not isinstance(v, ColumnElement)}
    by_columns: dict[tuple[str, ...], list[int]] = {}
    for row_id in sorted(values):
        by_columns.setdefault(tuple(values[row_id]), []).append(row_id)
    for columns, ids in by_columns.items():
        for chunk in chunks(ids):
            params = {f"s_{column}": value for column, value in common.items()}
            for i, row_id in enumerate(chunk):
                params[f"k{i}"] = row_id
                params.update(zip((f"v{i}_{c}" for c in columns), values[row_id].values(),
                                  strict=True))
            statement = _update_statement(table, columns, tuple(common), expressions, len(chunk))
            session.execute(statement, params, execution_options={
                ASSIGNED_ROWS: [{**values[row_id], **common} for row_id in chunk]})


@functools.lru_cache(maxsize=512)
def _update_statement(table: Table, columns: tuple[str, ...], common: tuple[str, ...],
                      expressions: tuple[tuple[str, ColumnElement[Any]], ...],
                      count: int) -> Update:
    """`update_rows`' statement for `count` rows."""
    ids = [bindparam(f"k{i}", type_=table.c.id.type) for i in range(count)]
    assignments: dict[str, Any] = {
        column: case(*((table.c.id == ids[i],
                        bindparam(f"v{i}_{column}", type_=table.c[column].type))
                       for i in range(count)), else_=table.c[column])
        for column in columns}
    assignments.update((c, bindparam(f"s_{c}", type_=table.c[c].type)) for c in common)
    assignments.update(expressions)
    return update(table).where(table.c.id.in_(ids)).values(assignments)


def insert_rows(session: Session, table: Table, columns: Sequence[str],
                rows: list[tuple[Any, ...]]) -> None:
    """The rows, in their order, as one JSON array that the database expands itself: one
    statement, whatever the number of rows. Values are text, numbers, None, dates or `stamp`s,
    never bytes (those go through `executemany_insert`).

    Per-row statements cost more than their rows, differently on each database:
    - MariaDB: PyMySQL's executemany escapes every value in Python (str.translate per string, a
      function call per value): for an upload of 200 programs most of the server's CPU went
      there, and 40,000 missing patches took 0.2 s of it per 8,000 rows.
    - SQLite: the driver releases the GIL around every row's step and must win it back before
      the next. With one other thread busy in Python (another upload being validated) each
      win-back waits out its switch interval (5 ms): a 200-row executemany took 0.9-1.0 s
      instead of 2 ms, inside the one-writer-at-a-time section every upload queues for.
    orjson writes the array in C. On MariaDB the statement carries it as a hex literal, which
    needs no escaping and cannot break out of the statement whatever the text holds; on SQLite
    it is a bound parameter. Converting and checking each value against its column is the
    INSERT's, as for plain rows (dates go as YYYY-MM-DD, which orjson writes for a date).
    """
    if not rows:
        return
    text = orjson.dumps(rows)
    if len(text) > _JSON_CHUNK and len(rows) > 1:
        # Slices of the average size that fits (fewer than all the rows); one made of longer
        # rows than the average is split again.
        step = max(1, len(rows) * _JSON_CHUNK // len(text))
        for start in range(0, len(rows), step):
            insert_rows(session, table, columns, rows[start:start + step])
        return
    connection = session.connection()
    head, tail = _json_insert_sql(session, table, tuple(columns))
    if connection.dialect.name == "mysql":
        connection.exec_driver_sql(f"{head}x'{text.hex()}'{tail}")
    elif b"\\u0000" in text:
        # SQLite's JSON functions end a string at a NUL character: such rows go one by one.
        executemany_insert(session, table, columns, rows)
    else:
        connection.exec_driver_sql(f"{head}?{tail}", (text.decode(),))


def executemany_insert(session: Session, table: Table, columns: Sequence[str],
                       rows: list[tuple[Any, ...]]) -> None:
    """One executemany at the driver, with the dialect's placeholders (any values, bytes
    included). On SQLite each row is a GIL hand-over (see `insert_rows`): for a few rows."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
           f"VALUES ({', '.join([mark] * len(columns))})")
    connection.exec_driver_sql(sql, rows)


def _json_insert_sql(session: Session, table: Table, columns: tuple[str, ...]) -> tuple[str, str]:
    """The statement around the JSON array, built once per database kind and table (no `%` in
    it: PyMySQL would read one as a placeholder)."""
    dialect = session.get_bind().dialect
    key = (dialect.name, table.name, columns)
    sql = _JSON_INSERT_SQL.get(key)
    if sql is None:
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in columns)
        if dialect.name == "mysql":
            paths = ", ".join(
                f"{quote(c)} {'BIGINT' if isinstance(table.c[c].type, Integer) else 'LONGTEXT'} "
                f"PATH '$[{i}]'" for i, c in enumerate(columns))
            sql = (f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} FROM JSON_TABLE("
                   f"CONVERT(",
                   f" USING utf8mb4), '$[*]' COLUMNS (`json_row` FOR ORDINALITY, {paths})) "
                   f"AS j ORDER BY `json_row`")
        else:
            values = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
            sql = (f"INSERT INTO {quote(table.name)} ({names}) SELECT {values} FROM json_each(",
                   ") ORDER BY key")
        _JSON_INSERT_SQL[key] = sql
    return sql


def fetch_rows(session: Session, stmt: Executable) -> tuple[list[str], list[tuple[Any, ...]]]:
    """(column names, rows) of a SELECT, the rows as the driver's plain tuples, on the
    session's connection and transaction. Executed through SQLAlchemy (bound parameters
    converted, driver errors wrapped, a lost connection invalidated), but not read through it:
    building a Row object per row, and pandas inspecting each, cost about four times the query
    itself for a scan batch's ~150 programs per endpoint, 2.5 s against 0.9 s on 400,000 report
    rows. The price: values arrive as the driver gives them, without SQLAlchemy's result types
    (dates and datetimes are text on SQLite and objects on MariaDB, booleans 0/1)."""
    result = session.connection().execute(stmt)
    try:
        keys = list(result.keys())
        rows = list(result.cursor.fetchall()) if result.cursor is not None else []
    finally:
        result.close()
    return keys, rows


def stored_groups(session: Session, table: Table, owner: str, owners: Sequence[int],
                  columns: Sequence[str]) -> dict[int, list[list[Any]] | None]:
    """The rows of `table` whose `owner` column is one of `owners`, as lists of `columns` values
    per owner, aggregated to one JSON array per owner by the database: one statement, one
    parsed value per owner (PyMySQL decodes rows in Python, ~10 µs each; SQLite would hand the
    GIL over per row). Dates come back as YYYY-MM-DD text. An owner with no rows is absent;
    None for one whose array could not be read whole (MariaDB cuts it at group_concat_max_len,
    1 MB by default, and returns NULL past max_allowed_packet): the caller then treats its rows
    as unknown."""
    if not owners:
        return {}
    connection = session.connection()
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    aggregate, array = (("JSON_ARRAYAGG", "JSON_ARRAY") if dialect.name == "mysql"
                        else ("json_group_array", "json_array"))
    listed = ", ".join(str(int(o)) for o in owners)  # ints: nothing to escape
    sql = (f"SELECT {quote(owner)}, {aggregate}({array}({', '.join(quote(c) for c in columns)}))"
           f" FROM {quote(table.name)} WHERE {quote(owner)} IN ({listed}) GROUP BY {quote(owner)}")
    groups: dict[int, list[list[Any]] | None] = {}
    for key, text in connection.exec_driver_sql(sql):
        try:
            rows = orjson.loads(text) if text is not None else None
        except orjson.JSONDecodeError:
            rows = None
        groups[int(key)] = rows if isinstance(rows, list) else None
    return groups


def day(value: dt.date | None) -> str | None:
    """A Date column's value, on both databases: YYYY-MM-DD text, what both store from it and
    what `stored_groups` gives back, so a row compares equal to its stored self."""
    return value.isoformat() if value is not None else None


def stamp(value: dt.datetime) -> str:
    """A UTCDateTime column's value, on both databases: naive UTC as the text SQLAlchemy's
    SQLite DateTime writes (microseconds always), which MariaDB reads into a DATETIME as it
    reads PyMySQL's own literal."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")
