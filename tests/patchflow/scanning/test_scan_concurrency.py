"""Scan batches running at once on MariaDB: the Dask runner's workers, a scan flow beside a
server's background rescans, two `serve --workers` rescanning. Each batch updates its
endpoints' rows by id list; at REPEATABLE READ neighbouring batches deadlocked on those rows:
2 to 5 victims in each of three runs of this test before
patchflow.fleet.transactions.read_committed, none after."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import text

from models.db import session_scope
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


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
def test_neighbouring_batches_scanned_at_once_do_not_deadlock(home: Path, db_url: str) -> None:
    ids = windows_fleet(db_url, [4000 + (n * 37) % 3000 for n in range(600)])
    with session_scope(db_url) as session:
        catalog = load_catalog(session)
    parts = batches(ids, 200)
    for part in parts:  # one after another, as the default runner: the expected results
        scan_tasks.scan_batch.fn(None, part, catalog)
    expected = _snapshot(db_url)
    assert len(expected[0]) > 600 and {s for _id, s in expected[1]} == {"Missing Patches"}

    errors: list[str] = []

    def scan(queue: list[list[int]]) -> None:
        while queue:
            try:
                part = queue.pop(0)
            except IndexError:
                return
            try:
                scan_tasks.scan_batch.fn(None, part, catalog)
            except Exception as exc:  # collected, asserted below
                errors.append(str(exc).splitlines()[0][:200])

    for _round in range(ROUNDS):
        queue = list(parts)
        threads = [threading.Thread(target=scan, args=(queue,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert _snapshot(db_url) == expected
