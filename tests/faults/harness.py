"""Run the real `patchflow` and `patchflow-agent` commands in subprocesses, with or without a
crash point (patchflow/ops/faults.py), and read the database they leave behind.

A killed command must have died from SIGKILL at its point (exit -9), not from a bug that
happened to stop it; `killed()` checks that, so a test cannot pass by crashing elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from models import Base

BIN = Path(sys.executable).parent
PATCHFLOW = str(BIN / "patchflow")
AGENT = str(BIN / "patchflow-agent")
TIMEOUT = 240


@dataclass
class Commands:
    """The environment every subprocess of one test shares: its home, database and Prefect."""

    home: Path
    db_url: str
    prefect_home: Path
    prefect_api: str | None = None

    def env(self, fault: str | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREFECT_", "PATCHFLOW_"))}
        env.update({
            "PATCHFLOW_HOME": str(self.home),
            "PATCHFLOW_DATABASE_URL": self.db_url,
            "PREFECT_HOME": str(self.prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "DO_NOT_TRACK": "1",
        })
        if self.prefect_api:  # the session's test server: no temporary server per command
            env["PREFECT_API_URL"] = self.prefect_api
        if fault:
            env["PATCHFLOW_FAULT_POINT"] = fault
        return env

    def run(self, *args: str, fault: str | None = None,
            program: str = PATCHFLOW) -> subprocess.CompletedProcess[str]:
        return subprocess.run([program, *args], env=self.env(fault), capture_output=True,
                              text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)

    def ok(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args)
        assert result.returncode == 0, (args, result.stdout, result.stderr[-3000:])
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        return result

    def killed(self, *args: str, fault: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*args, fault=fault)
        assert result.returncode == -signal.SIGKILL, (
            f"{args} with {fault} ended with {result.returncode}, not SIGKILL at the point",
            result.stdout, result.stderr[-3000:])
        return result

    def start_agent(self, *args: str, fault: str | None = None,
                    log: Path | None = None) -> subprocess.Popen[bytes]:
        out = log.open("ab") if log else subprocess.DEVNULL
        try:
            return subprocess.Popen([AGENT, *args], env=self.env(fault), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            if log:
                out.close()  # type: ignore[union-attr]


def query(db_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params).all()]
    finally:
        engine.dispose()


def scalar(db_url: str, sql: str, **params: Any) -> Any:
    return query(db_url, sql, **params)[0][0]


def counts(db_url: str, tables: list[str] | None = None) -> dict[str, int]:
    names = tables or [t.name for t in Base.metadata.sorted_tables]
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {n: int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {n}")).scalar_one())
                    for n in names}
    finally:
        engine.dispose()


def snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order, timestamps to the second. Without the
    credentials generation: a signal to other processes' caches, not data (a restore writes a
    new one on purpose)."""
    import datetime as dt

    from patchflow.fleet.agent_cache import GENERATION_KEY

    def norm(value: Any) -> Any:
        return value.replace(tzinfo=None, microsecond=0) if isinstance(value, dt.datetime) \
            else value

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            return {t.name: [tuple(norm(v) for v in row) for row in conn.execute(
                sa.select(t).order_by(*t.primary_key.columns)).all()
                if not (t.name == "settings" and row[0] == GENERATION_KEY)]
                for t in Base.metadata.sorted_tables}
    finally:
        engine.dispose()
