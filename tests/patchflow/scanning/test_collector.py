"""The cyclic garbage collector is off while scan batches run and back after the last one
(patchflow.scanning.collector), and a scan batch runs inside that pause."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from models.db import get_engine
from patchflow.scanning import service
from patchflow.scanning.collector import collector_paused
from tests.support.scan_fleet import two_endpoint_fleet


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_off_while_any_holder_runs_and_back_after_the_last() -> None:
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def second() -> None:
        assert first_in.wait(10)
        with collector_paused():
            second_in.set()
            assert first_out.wait(10)
            seen["after the first left"] = gc.isenabled()

    thread = threading.Thread(target=second)
    thread.start()
    with collector_paused():
        seen["inside"] = gc.isenabled()
        first_in.set()
        assert second_in.wait(10)
    first_out.set()
    thread.join(10)
    assert seen == {"inside": False, "after the first left": False}
    assert gc.isenabled()


def test_back_after_an_error_and_left_off_when_it_was_off() -> None:
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a batch failed")
    assert gc.isenabled()
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()


def _collector_states(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[bool]:
    """Whether the collector ran at each call of `module.name`, which still does its work."""
    seen: list[bool] = []
    real = getattr(module, name)

    def spy(*args: Any) -> Any:
        seen.append(gc.isenabled())
        return real(*args)

    monkeypatch.setattr(module, name, spy)
    return seen


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_scan_batch_reads_evaluates_and_writes_with_the_collector_off(
    home: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = two_endpoint_fleet(db_url)
    seen = _collector_states(monkeypatch, service, "run_engine")
    counts = service.scan_now(ids)
    assert seen == [False] and gc.isenabled()
    assert counts.scanned == 2
    with get_engine(db_url).connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM missing_patches")).scalar_one() > 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_an_incremental_scans_plan_reads_with_the_collector_off(
    home: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.db import session_scope
    from patchflow.scanning import basis_store

    ids = two_endpoint_fleet(db_url)
    service.scan_now(ids)
    seen = _collector_states(monkeypatch, basis_store, "_basis_rows")
    with session_scope(db_url) as session:
        plan = basis_store.plan(session, ids, service.cached_catalog(session))
    assert seen == [False] and gc.isenabled()
    assert sorted(plan.unchanged) == sorted(ids) and plan.rescan == []
