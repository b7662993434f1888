"""Fixtures of the fault suite: `commands` runs the real CLI in subprocesses against the test's
home and database (SQLite and MariaDB through `home`), reporting to the session's Prefect test
server so no command pays for a temporary Prefect server of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.harness import Commands


@pytest.fixture(scope="session")
def prefect_api(prefect: None) -> str:
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness did not set an API URL"
    return str(url)


@pytest.fixture
def commands(home: Path, db_url: str, prefect_api: str, tmp_path: Path) -> Commands:
    return Commands(home, db_url, tmp_path / "prefect-home", prefect_api)
