"""The SQLite writer queue: writers get the lock one at a time, in the order they asked."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from patchflow.fleet.transactions import FifoLock


def test_waiters_get_the_lock_in_arrival_order_one_at_a_time() -> None:
    lock = FifoLock()
    order: list[int] = []
    inside = 0
    most_inside = 0
    guard = threading.Lock()

    def writer(n: int) -> None:
        nonlocal inside, most_inside
        with lock:
            with guard:
                inside += 1
                most_inside = max(most_inside, inside)
            order.append(n)
            time.sleep(0.001)
            with guard:
                inside -= 1

    lock.__enter__()  # held: every writer below queues
    threads = []
    for n in range(12):
        thread = threading.Thread(target=writer, args=(n,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        while len(lock._waiters) < n + 1:  # queued before the next one starts
            assert time.monotonic() < deadline
            time.sleep(0.001)
    lock.__exit__(None, None, None)
    for thread in threads:
        thread.join(10)
    assert order == list(range(12))
    assert most_inside == 1
    with lock:  # free again: taken at once
        assert not lock._waiters


@pytest.mark.parametrize("entry", ["serialized_writes", "queued_write"])
def test_scan_writes_queue_behind_an_upload_batch_on_sqlite_only(db_url: str, entry: str) -> None:
    """`serialized_writes` (a scan batch's writes) and `queued_write` (its marks, closing a
    scan) wait for the writer queue that uploads hold on SQLite, instead of meeting SQLite's
    sleeping busy handler; MariaDB's own row locks queue writers there, so they do not wait."""
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    from models.db import session_scope
    from patchflow.fleet.transactions import queued_write, serialized_writes, write_transaction

    @contextlib.contextmanager
    def writing() -> Iterator[Session]:
        if entry == "queued_write":
            with queued_write(db_url) as session:
                yield session
        else:
            with session_scope(db_url) as session, serialized_writes(session):
                yield session

    holding, release = threading.Event(), threading.Event()

    def upload_batch(session: object) -> None:
        holding.set()
        assert release.wait(10)

    upload = threading.Thread(target=write_transaction, args=(db_url, upload_batch))
    upload.start()
    assert holding.wait(10)
    inside = threading.Event()

    def scan_write() -> None:
        with writing() as session:
            inside.set()
            session.execute(text("SELECT 1"))

    scan = threading.Thread(target=scan_write)
    scan.start()
    try:
        if db_url.startswith("sqlite"):
            assert not inside.wait(0.5)  # queued behind the upload batch
        else:
            assert inside.wait(10)
    finally:
        release.set()
        upload.join(10)
    assert inside.wait(10)
    scan.join(10)
