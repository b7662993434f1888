"""Engines and sessions for the patch database (SQLite embedded, MariaDB/MySQL in production)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from patchflow import config


class DatabaseError(Exception):
    """The database cannot be used as configured; the message is one line."""


SQLITE_BUSY_MS = 30000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # WAL lets the API server read while a sync or scan writes; foreign keys are off by default.
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")
    cursor.close()


# SQLite result codes (primary, the low byte of extended codes) after which a connection is
# not trusted again: SQLITE_READONLY (a connection opened while the file or its folder was not
# writable stays read-only for life, even once the permission is back), SQLITE_IOERR and
# SQLITE_CANTOPEN. Busy, locked, full or constraint errors say nothing about the connection.
_SQLITE_BROKEN = {8, 10, 14}


def _discard_broken_sqlite(context: ExceptionContext) -> None:
    """Mark such an error as a disconnect: SQLAlchemy then invalidates the connection and the
    pool's older ones (opened in the same bad period), and the next checkout opens fresh."""
    code = getattr(context.original_exception, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF in _SQLITE_BROKEN:
        context.is_disconnect = True


def make_engine(url: str, fresh_connections: bool = False) -> Engine:
    """`fresh_connections`: no pool, every checkout opens a new connection (health probes)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseError(f"not a database URL: {url!r}") from None
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        if fresh_connections and parsed.database not in (None, "", ":memory:"):
            kwargs["poolclass"] = NullPool
        engine = create_engine(parsed, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "handle_error", _discard_broken_sqlite)
        return engine
    if parsed.get_backend_name() == "mysql":
        query = dict(parsed.query)
        query.setdefault("charset", "utf8mb4")
        parsed = parsed.set(query=query)
        kwargs["connect_args"] = {"connect_timeout": 10, "read_timeout": 600, "write_timeout": 600}
        kwargs["pool_pre_ping"] = True
        kwargs["pool_recycle"] = 3600
        return create_engine(parsed, **kwargs)
    raise DatabaseError(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or mysql")


_ENGINES: dict[str, Engine] = {}
_PROBE_ENGINES: dict[str, Engine] = {}
_FACTORIES: dict[Engine, sessionmaker[Session]] = {}
_SQLITE_BUSY = 5  # a writer holds the lock: the database is writable, only busy
PROBE_BUSY_MS = 1000
# A write that changes nothing but needs the database's write lock and write permission.
_PROBE = "UPDATE alembic_version SET version_num = version_num WHERE 1 = 0"


def check_writable(url: str | None = None) -> None:
    """Raise DBAPIError unless the database takes a write now; nothing is changed.

    SELECT 1 passes on a read-only connection, a read-only database or one whose disk is
    full, so health checks write: an empty UPDATE in a transaction that is rolled back. On
    SQLite it waits at most PROBE_BUSY_MS for the write lock; a lock held by another writer
    proves the database writable. A connection found broken is discarded (see
    _discard_broken_sqlite) and the probe repeated once on a fresh one, so a connection left
    over from a past read-only period is not reported as a read-only database."""
    engine = _probe_engine(url or config.database_url())
    for attempt in (1, 2):
        try:
            with engine.connect() as conn:
                _write_probe(conn)
            return
        except DBAPIError as exc:
            if attempt == 2 or not exc.connection_invalidated:
                raise


def _probe_engine(url: str) -> Engine:
    """SQLite: a connection opened now, since whether a pooled one can write says nothing
    about the next (one opened while the file was read-only stays read-only, one opened
    before keeps writing through a since read-only file). Others: the pool (pre-pinged)."""
    engine = get_engine(url)
    if engine.dialect.name != "sqlite":
        return engine
    if url not in _PROBE_ENGINES:
        _PROBE_ENGINES[url] = make_engine(url, fresh_connections=True)
    return _PROBE_ENGINES[url]


def _write_probe(conn: Connection) -> None:
    sqlite = conn.dialect.name == "sqlite"
    if sqlite:
        conn.exec_driver_sql(f"PRAGMA busy_timeout={PROBE_BUSY_MS}")
    try:
        conn.exec_driver_sql(_PROBE)
    except OperationalError as exc:
        if not sqlite or getattr(exc.orig, "sqlite_errorcode", None) != _SQLITE_BUSY:
            raise
    finally:
        conn.rollback()
        if sqlite and not conn.invalidated:
            conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_MS}")


def get_engine(url: str | None = None) -> Engine:
    """One pooled engine per URL for the life of the process."""
    url = url or config.database_url()
    if url not in _ENGINES:
        _ENGINES[url] = make_engine(url)
    return _ENGINES[url]


def dispose_all() -> None:
    """Drop cached engines (tests and the demo switch homes inside one process)."""
    for engine in [*_ENGINES.values(), *_PROBE_ENGINES.values()]:
        engine.dispose()
    _ENGINES.clear()
    _PROBE_ENGINES.clear()
    _FACTORIES.clear()


def _session_factory(engine: Engine) -> sessionmaker[Session]:
    """One factory per engine: each `sessionmaker` is a new Session subclass, and registering
    it with every Session event listener cost ~0.5 ms per transaction (a tenth of storing an
    agent's inventory)."""
    factory = _FACTORIES.get(engine)
    if factory is None:
        factory = _FACTORIES.setdefault(engine, sessionmaker(bind=engine, expire_on_commit=False))
    return factory


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error, always close."""
    session = _session_factory(get_engine(url))()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
