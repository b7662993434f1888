"""Shared test harness.

- `db_url`: every database test runs twice, on SQLite and on MariaDB through PyMySQL. MariaDB gets
  one fresh database per test session (dropped at the end); tables are emptied between tests.
  Outside CI an unreachable MariaDB skips those cases with the reason; in CI (CI=true) it fails.
- `home`: a fresh PATCHFLOW_HOME pointing at that database, schema at head.
- `prefect`: one Prefect test server for the whole session (starting one costs seconds).
- `cli`: runs `patchflow ...` in-process and returns (exit code, stdout, stderr).
"""

from __future__ import annotations

import logging
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.mariadb import MARIADB_ROOT_URL, fresh_database
from tests.support.paths import REPO, SHARED_FIXTURES

ROOT = REPO

# Prefect must see its settings before it is imported anywhere.
_PREFECT_HOME = Path(os.environ.get("TMPDIR", "/tmp")) / f"patchflow-test-prefect-{os.getpid()}"
os.environ["PREFECT_HOME"] = str(_PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")


def shared_fixtures(*parts: str) -> Path:
    """Path into ../shared/fixtures, skipping the test when that folder is absent."""
    path = SHARED_FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real upstream fixtures not found at {path} (../shared is absent)")
    return path


_mariadb_db: str | None = None
_mariadb_error: str | None = None


def _mariadb_database() -> str:
    """Create the session's MariaDB database once; raise with the reason when unreachable."""
    global _mariadb_db, _mariadb_error
    if _mariadb_db is None and _mariadb_error is None:
        import sqlalchemy as sa

        name = f"patchflow_test_{uuid.uuid4().hex[:10]}"
        try:
            engine = sa.create_engine(MARIADB_ROOT_URL, connect_args={"connect_timeout": 5})
            with engine.connect() as conn:
                conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
            engine.dispose()
            _mariadb_db = name
        except Exception as exc:  # any driver error: unreachable
            _mariadb_error = f"MariaDB not reachable at {MARIADB_ROOT_URL}: {exc}"
    if _mariadb_error:
        raise RuntimeError(_mariadb_error)
    assert _mariadb_db is not None
    return _mariadb_db


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _mariadb_db:
        import sqlalchemy as sa

        engine = sa.create_engine(MARIADB_ROOT_URL)
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {_mariadb_db}"))
        engine.dispose()


_migrated: set[str] = set()


def _prepare(url: str) -> None:
    """Schema at head once per URL, then every table emptied: each test starts clean."""
    import sqlalchemy as sa

    from models import Base
    from models.db import get_engine
    from models.migrate import upgrade

    if url not in _migrated:
        upgrade(url)
        _migrated.add(url)
    engine = get_engine(url)
    with engine.begin() as conn:
        if engine.dialect.name == "mysql":
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS=0"))
            for table in Base.metadata.sorted_tables:
                conn.execute(sa.text(f"DELETE FROM {table.name}"))
            conn.execute(sa.text("SET FOREIGN_KEY_CHECKS=1"))
        else:
            # Self-references (nested groups, superseded patches) are checked at commit.
            conn.execute(sa.text("PRAGMA defer_foreign_keys=ON"))
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())


@pytest.fixture(params=["sqlite", "mariadb"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'patchflow.db'}"
    else:
        try:
            name = _mariadb_database()
        except RuntimeError as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(str(exc))
            pytest.skip(str(exc))
        url = f"{MARIADB_ROOT_URL}/{name}"
    _prepare(url)
    return url


@pytest.fixture(params=["sqlite", "mariadb"])
def bare_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of its own (migrations are run on it step by step: see
    tests/support/migrations)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
        return
    with fresh_database("patchflow_mig") as url:
        yield url


@pytest.fixture
def home(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh PATCHFLOW_HOME on the parametrized database, schema at head."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("PATCHFLOW_HOME", str(path))
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", db_url)
    monkeypatch.delenv("PATCHFLOW_PROXY_PASSWORD", raising=False)
    return path


@pytest.fixture
def sqlite_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home on SQLite only, for tests that are not about the database."""
    path = tmp_path / "home"
    path.mkdir()
    url = f"sqlite:///{path / 'patchflow.db'}"
    monkeypatch.setenv("PATCHFLOW_HOME", str(path))
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", url)
    _prepare(url)
    return path


@pytest.fixture(autouse=True)
def _logging_state() -> Iterator[None]:
    """Logging set up by one test must not leak into the next one run in the same process:
    - a test that runs `serve` in-process configures the "patchflow" logger (its own handler,
      no propagation): it is put back as it was;
    - a handler made during an earlier test (Prefect's console handler on the root logger, a
      StreamHandler) may hold that test's captured stderr, closed since: it is pointed at the
      current one, so a warning from a background thread is logged, not a "Logging error"."""
    _repair_log_streams()
    logger = logging.getLogger("patchflow")
    handlers, propagate, level = list(logger.handlers), logger.propagate, logger.level
    yield
    logger.handlers[:] = handlers
    logger.propagate, logger.level = propagate, level


def _repair_log_streams() -> None:
    """Point every handler (and a Prefect console handler's rich Console, which keeps its own
    file) that writes to a closed stream at the current stderr."""
    def closed(stream: object) -> bool:
        return stream is not None and bool(getattr(stream, "closed", False))

    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in getattr(logger, "handlers", ()):
            if closed(getattr(handler, "stream", None)):
                handler.stream = sys.stderr  # not setStream: it flushes the closed one
            console = getattr(handler, "console", None)
            if console is not None and closed(getattr(console, "_file", None)):
                console.file = sys.stderr


@pytest.fixture(scope="session")
def prefect() -> Iterator[None]:
    """One Prefect test server for the session; flows called in tests report to it."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run `patchflow ARGS...` in this process; returns CliResult(code, out, err)."""
    from cli.main import main

    def run(*args: str, input: str | None = None) -> CliResult:
        capsys.readouterr()
        _repair_log_streams()  # a background thread may log while the command runs
        code = main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
