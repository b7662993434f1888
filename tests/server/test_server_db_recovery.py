"""The real server app on SQLite after its database file was briefly unwritable: health says so
while it lasts (503, not "ok"), and once it is writable again the pooled connections opened
meanwhile, which SQLite keeps read-only for life, are discarded instead of failing writes with
503 until a restart."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from models.db import get_engine
from tests.fixtures.agent.harness import Api, base_inventory, running_api


@contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """The file cannot be opened for writing while inside: mode 0444, or for root (whom
    permissions do not stop) the immutable attribute."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(mode)
        return
    try:
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot make {path} unwritable for root (chattr +i): {exc}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True, capture_output=True)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    with running_api("sqlite", tmp_path) as running:
        yield running


def test_sqlite_writes_recover_after_a_read_only_period(api: Api) -> None:
    database = Path(api.db_url.removeprefix("sqlite:///"))
    with api.client() as http:
        headers = api.enroll(http, "ws-ro")

        def upload(programs: int) -> int:
            return http.put("/api/v1/agent/inventory", headers=headers,
                            json=base_inventory("ws-ro", programs)).status_code

        def traffic(n: int) -> list[int]:
            with api.client() as client:
                polled = client.get("/api/v1/agent/jobs", headers=headers).status_code
                sent = client.put("/api/v1/agent/inventory", headers=headers,
                                  json=base_inventory("ws-ro", 2 + n % 3)).status_code
                return [polled, sent]

        assert upload(2) == 200
        assert http.get("/api/v1/health").json()["database"] == "ok"
        with unwritable(database):
            # The pool's idle connections are closed, as pool recycling or a restart does, so
            # concurrent agents make the server open new ones while the file is read-only.
            get_engine(api.db_url).dispose()
            with ThreadPoolExecutor(8) as pool:
                statuses = [s for pair in pool.map(traffic, range(16)) for s in pair]
            health = http.get("/api/v1/health")
            assert health.status_code == 503, health.text
            assert health.json() == {"error": "database unavailable or not writable, retry later"}
            assert set(statuses) <= {200, 503} and 503 in statuses  # refused, never a 500

        assert http.get("/api/v1/health").status_code == 200
        # A connection left over from the read-only period fails at most the first write that
        # meets it; it and its generation are then replaced, and every later write succeeds.
        results = [upload(3 + i % 2) for i in range(20)]
        assert results.count(503) <= 1 and results[-10:] == [200] * 10, results
        assert all(status == 200 for status in (traffic(n)[1] for n in range(5)))


def test_health_reports_ok_while_a_writer_holds_the_lock(api: Api) -> None:
    """A long write (a sync) holds SQLite's lock: the database is writable, only busy, and the
    probe says ok after a short wait instead of hanging for the busy timeout."""
    import sqlite3
    import time

    database = api.db_url.removeprefix("sqlite:///")
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with api.client() as http:
            health = http.get("/api/v1/health")
        assert health.status_code == 200, health.text
        assert time.monotonic() - started < 10
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_health_is_still_plain_json(api: Api) -> None:
    response = httpx.get(f"{api.url}/api/v1/health", verify=str(api.cert))
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
