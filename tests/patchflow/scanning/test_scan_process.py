"""Background rescans in a child process on MariaDB (patchflow.scanning.scan_process): the
child writes the same results an in-process scan writes, this process does none of the work,
a child that died is replaced at the next batch, a failed batch fails alone, and SQLite keeps
its rescans in process."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import sqlalchemy as sa

from models.db import get_engine
from patchflow.scanning import scan_process, service
from patchflow.scanning.scan_process import ScanProcess, ScanProcessError
from tests.support.scan_fleet import two_endpoint_fleet

MISSING = sa.text("SELECT e.hostname, m.patch_id, m.reason FROM missing_patches m "
                  "JOIN endpoints e ON e.id = m.endpoint_id ORDER BY 1, 2")
STATES = sa.text("SELECT hostname, scan_state FROM endpoints ORDER BY hostname")


def _results(db_url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with get_engine(db_url).connect() as conn:
        return ([tuple(r) for r in conn.execute(MISSING)],
                [tuple(r) for r in conn.execute(STATES)])


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
def test_the_child_writes_what_an_in_process_scan_writes(home: Path, db_url: str) -> None:
    ids = two_endpoint_fleet(db_url)
    service._cached.clear()
    process = scan_process.for_database(db_url)
    assert isinstance(process, ScanProcess)
    try:
        assert process(ids) == 2
        assert process.pid is not None and process.pid != os.getpid()
        assert service._cached == {}  # the catalog was loaded there, not here
        by_child = _results(db_url)
        assert by_child[0] and {state for _, state in by_child[1]} == {"Missing Patches"}
        service.scan_now(ids)
        assert _results(db_url) == by_child
    finally:
        process.close()
    assert process.pid is None


@pytest.mark.parametrize("db_url", ["mariadb"], indirect=True)
def test_a_dead_child_is_replaced_and_a_failed_batch_fails_alone(
        home: Path, db_url: str) -> None:
    ids = two_endpoint_fleet(db_url)
    process = ScanProcess(db_url)
    try:
        assert process(ids[:1]) == 1
        first = process.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        with pytest.raises(ScanProcessError, match="ended"):
            process(ids)
        assert process(ids) == 2  # a new child
        assert process.pid not in (None, first)
        with pytest.raises(ScanProcessError, match="invalid literal"):
            process(["not an id"])  # type: ignore[list-item]
        assert process(ids) == 2  # the same child goes on
    finally:
        process.close()
    with get_engine(db_url).connect() as conn:
        statuses = conn.execute(sa.text("SELECT status FROM scans")).scalars().all()
    assert statuses.count("completed") == 3


def test_sqlite_keeps_its_rescans_in_process(tmp_path: Path) -> None:
    assert scan_process.for_database(f"sqlite:///{tmp_path / 'p.db'}") is None
    assert scan_process.for_database(None) is None
