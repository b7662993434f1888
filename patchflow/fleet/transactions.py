"""Database work that tens of thousands of agents run concurrently.

On MariaDB, InnoDB's default REPEATABLE READ takes gap locks on the endpoint_id index when an
inventory deletes the previous rows, so two uploads for neighbouring endpoints can deadlock.
It also keeps locked every row an UPDATE examined, changed or not, and
`UPDATE endpoints ... WHERE id IN (<a third of the table's ids>)` examines them all (EXPLAIN:
a scan of the primary key): two scan batches at once (the Dask runner's workers, a flow beside
a server's rescans) then deadlocked, each batch's update waiting for rows the other held
(tests/patchflow/scanning/test_scan_concurrency.py; the evidence in docs/architecture.md).
READ COMMITTED takes no gap locks for these statements and lets go of rows a statement
examined but did not change. A deadlock that still happens (the database picks a victim and
rolls it back whole) is retried where the work can be (`write_transaction`, the flows'
tasks), as InnoDB's own message asks.
On SQLite, writers of this process queue on a lock; `db_slot` keeps agent requests within the
connection pool on both.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from models.db import get_engine, session_scope

T = TypeVar("T")
_RETRYABLE = {1213, 1205}  # deadlock found; lock wait timeout
ATTEMPTS = 5


def _retryable(exc: OperationalError) -> bool:
    args: tuple[Any, ...] = getattr(exc.orig, "args", ())
    return bool(args) and args[0] in _RETRYABLE


class FifoLock:
    """A lock handed over in arrival order. threading.Lock makes no fairness promise, and under
    a burst of uploads an unlucky writer could wait many turns, which is the p99 tail. Each
    waiter sleeps on its own lock and the holder hands over to the first one alone: waking every
    waiter at each release (a Condition's notify_all) cost a tenth of the server's time under
    32 concurrent uploads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._held = False

    def __enter__(self) -> None:
        with self._lock:
            if not self._held:
                self._held = True
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by the holder, which hands the lock over still held

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


# SQLite allows one writer at a time. Writers of this process queue here instead of in SQLite's
# busy handler, which sleeps in growing steps (up to 100 ms) and turned a burst of uploads into
# multi-second tails; other processes (the CLI, a second worker) still meet the busy handler.
_SQLITE_WRITER = FifoLock()


def read_committed(session: Session) -> None:
    """On MariaDB, run the session's transaction at READ COMMITTED (see the module's
    docstring); before its first statement. Nothing on SQLite, where writers queue."""
    if session.get_bind().dialect.name == "mysql":
        session.connection(execution_options={"isolation_level": "READ COMMITTED"})


@contextmanager
def serialized_writes(session: Session) -> Iterator[None]:
    """Around a transaction's writes and its commit (`write_transaction`'s whole work; a scan
    batch's writes only, as it reads and evaluates outside the queue): on SQLite they join the
    writer queue rather than meet SQLite's busy handler, whose sleeps of up to 100 ms stalled
    the uploads queued behind a background rescan. Nothing on MariaDB, whose row locks queue
    writers themselves."""
    if session.get_bind().dialect.name == "sqlite":
        with _SQLITE_WRITER:
            yield
    else:
        yield


@contextmanager
def queued_write(url: str | None = None) -> Iterator[Session]:
    """A session whose work and commit are `serialized_writes`: for the scan's short writes
    (marking a batch Scanning, closing a scan), which on SQLite may run while other threads of
    the process write (the flow's other batches, a server's uploads and rescans)."""
    with session_scope(url) as session, serialized_writes(session):
        read_committed(session)
        yield session
        session.commit()


class HeldConnection:
    """On MariaDB, one connection at READ COMMITTED, checked out once for a run of write
    transactions (the inventory writer's, while uploads keep coming) and kept with its pool
    slot until `release`. A checkout per transaction cost a ping, setting the isolation level
    and resetting it on return: four of a batch of changes' eleven round trips, a sixth of the
    writer's time (py-spy, bench.agent_api). Nothing is held on SQLite, whose connections are
    local. A transaction that fails gives its connection back: the next one checks out a
    fresh, pinged one."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._connection: Connection | None = None

    def get(self) -> Connection | None:
        engine = get_engine(self.url)
        if self._connection is None and engine.dialect.name == "mysql":
            slot = db_slot(self.url)
            slot.acquire()
            try:
                self._connection = engine.connect().execution_options(
                    isolation_level="READ COMMITTED")
            except BaseException:
                slot.release()
                raise
        return self._connection

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                connection.close()
            finally:
                db_slot(self.url).release()


def write_transaction(url: str | None, work: Callable[[Session], T],
                      held: HeldConnection | None = None) -> T:
    """Run `work` in one transaction (committed on return), retrying deadlock victims; on
    `held`'s connection when it holds one."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            if held is not None and (connection := held.get()) is not None:
                try:
                    with Session(bind=connection, expire_on_commit=False) as session:
                        result = work(session)
                        session.commit()
                    return result
                except BaseException:
                    held.release()
                    raise
            # MariaDB: a pool slot (see db_slot); SQLite: the FIFO writer queue.
            with session_scope(url) as session:
                if session.get_bind().dialect.name == "mysql":
                    with db_slot(url):
                        read_committed(session)
                        result = work(session)
                        session.commit()
                    return result
                with serialized_writes(session):
                    result = work(session)
                    session.commit()
                return result
        except OperationalError as exc:
            if attempt == ATTEMPTS or not _retryable(exc):
                raise
            time.sleep(random.uniform(0.005, 0.05) * attempt)
    raise AssertionError("unreachable")


_SLOTS: dict[str, threading.BoundedSemaphore] = {}
_SLOTS_LOCK = threading.Lock()


def db_slot(url: str | None) -> threading.BoundedSemaphore:
    """A semaphore with as many slots as the engine's connection pool keeps open.

    Past the pool size, SQLAlchemy hands out overflow connections that are closed again on
    return: on MariaDB each is a new TCP and TLS handshake, which under a burst of polls cost
    more than the queries themselves. Agent requests take a slot around their database work and
    so queue in memory instead.
    """
    key = url or ""
    with _SLOTS_LOCK:
        if key not in _SLOTS:
            pool = get_engine(url).pool
            size = pool.size() if isinstance(pool, QueuePool) else 5
            _SLOTS[key] = threading.BoundedSemaphore(max(1, size))
        return _SLOTS[key]
