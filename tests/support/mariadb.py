"""A MariaDB database of a test's own, for tests that need one besides the session's shared
database (migrations from an old revision, a restore into an empty database)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

MARIADB_ROOT_URL = os.environ.get(
    "PATCHFLOW_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306"
)


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty database, dropped afterwards. Unreachable MariaDB skips the test
    with the reason, or fails it in CI (CI=true)."""
    from models.db import get_engine

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    root = sa.create_engine(MARIADB_ROOT_URL, connect_args={"connect_timeout": 5})
    try:
        with root.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    except sa.exc.OperationalError as exc:
        root.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"MariaDB not reachable: {exc}")
        pytest.skip(f"MariaDB not reachable: {exc}")
    url = f"{MARIADB_ROOT_URL}/{name}"
    try:
        yield url
    finally:
        get_engine(url).dispose()
        with root.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        root.dispose()
