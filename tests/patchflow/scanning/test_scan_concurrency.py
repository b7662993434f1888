"""Scan batches running at once on MariaDB: the Dask runner's workers, a scan flow beside a
server's background rescans, two `serve --workers` rescanning. Each batch updates its
endpoints' rows by id list. At REPEATABLE READ such an update, run as a scan of the primary
key, kept every endpoints row locked until its commit: a batch's Scanning mark waited for
another batch it shares no endpoint with (the first test, deterministic), and neighbouring
batches deadlocked (the second, which is probabilistic: without
patchflow.fleet.transactions.read_committed it caught deadlocks in 5 of 9 runs)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from models.db import session_scope
from patchflow.scanning import basis_store, service
from patchflow.scanning.service import batches, load_catalog
from tasks import scan as scan_tasks
from tests.support.scan_fleet import windows_fleet

pytestmark = pytest.mark.slow
RESULTS = "SELECT endpoint_id, patch_id, reason FROM missing_patches ORDER BY 1, 2"
STATES = "SELECT id, scan_state FROM endpoints ORDER BY id"
ROUNDS = 8


def _snapshot(db_url: str) -> tuple[list[tuple], list[tuple]]:
    with session_scope(db_url) as session:
        return ([tuple(r) for r in session.execute(text(RESULTS))],
                [tuple(r) for r in session.execute(text(STATES))])


def _fleet(db_url: str) -> list[int]:
    return windows_fleet(db_url, [4000 + (n * 37) % 3000 for n in range(600)])


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
def test_a_batch_not_yet_committed_does_not_hold_back_anothers_mark(
    home: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose results are written but not committed; another batch, sharing no
    endpoint with it, marks its endpoints Scanning and goes on to read them. (Its write then
    waits for the first one's commit: deleting its old results scans rows the first one holds.
    Waiting is not deadlocking.)"""
    ids = _fleet(db_url)
    with session_scope(db_url) as session:
        catalog = load_catalog(session)
    # Scanned once first: the catalog state and scan profiles a first scan interns exist.
    for part in batches(ids, 200):
        scan_tasks.scan_batch.fn(None, part, catalog)
    written, release, reached = threading.Event(), threading.Event(), threading.Event()
    real_record, real_batch, errors = basis_store.record, service.scan_batch, []

    def record_then_hold(*args: Any) -> Any:
        result = real_record(*args)  # the batch's endpoint rows are updated by now
        if threading.current_thread().name == "held":
            written.set()
            release.wait(60)
        return result

    def batch_after_mark(*args: Any) -> Any:  # tasks.scan.scan_batch calls it after the mark
        if threading.current_thread().name == "other":
            reached.set()
        return real_batch(*args)

    def scan(part: list[int]) -> None:
        try:
            scan_tasks.scan_batch.fn(None, part, catalog)
        except Exception as exc:  # collected, asserted below
            errors.append(str(exc).splitlines()[0][:200])

    monkeypatch.setattr(basis_store, "record", record_then_hold)
    monkeypatch.setattr(service, "scan_batch", batch_after_mark)
    held = threading.Thread(target=scan, args=(ids[:200],), name="held")
    other = threading.Thread(target=scan, args=(ids[400:],), name="other")
    held.start()
    assert written.wait(60)
    other.start()
    marked = reached.wait(15)
    release.set()
    held.join(120)
    other.join(120)
    assert marked, "a batch's mark waited for another batch's uncommitted endpoint rows"
    assert errors == []


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
def test_neighbouring_batches_scanned_at_once_do_not_deadlock(home: Path, db_url: str) -> None:
    ids = _fleet(db_url)
    with session_scope(db_url) as session:
        catalog = load_catalog(session)
    parts = batches(ids, 200)
    for part in parts:  # one after another, as the default runner: the expected results
        scan_tasks.scan_batch.fn(None, part, catalog)
    expected = _snapshot(db_url)
    assert len(expected[0]) > 600 and {s for _id, s in expected[1]} == {"Missing Patches"}

    errors: list[str] = []

    def scan(part: list[int]) -> None:
        try:
            scan_tasks.scan_batch.fn(None, part, catalog)
        except Exception as exc:  # collected, asserted below
            errors.append(str(exc).splitlines()[0][:200])

    for _round in range(ROUNDS):  # two threads taking the batches in order, as the flow's runner
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(scan, parts))
    assert errors == []
    assert _snapshot(db_url) == expected
