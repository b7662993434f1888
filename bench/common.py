"""Helpers the benchmarks share."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator

MARIADB_ROOT_URL = os.environ.get("PATCHFLOW_BENCH_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")


@contextlib.contextmanager
def mariadb_database(prefix: str = "patchflow_bench") -> Iterator[str | None]:
    """A fresh database URL, dropped afterwards; None (with a line printed) if unreachable."""
    import sqlalchemy as sa

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(MARIADB_ROOT_URL, connect_args={"connect_timeout": 5})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET utf8mb4"))
    except Exception as exc:  # any driver error means unreachable
        print(f"MariaDB skipped: not reachable at {MARIADB_ROOT_URL} "
              f"({' '.join(str(exc).split())[:160]})")
        engine.dispose()
        yield None
        return
    try:
        yield f"{MARIADB_ROOT_URL}/{name}"
    finally:
        from models.db import dispose_all

        dispose_all()
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
