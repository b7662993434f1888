"""Scale-out: the scan flow's batches on a Dask cluster (two worker processes) give exactly the
results of the default in-process run, chosen by the flow parameter or by patchflow.toml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.flows.test_scan_flow import _prepare

pytest.importorskip("prefect_dask")
pytestmark = pytest.mark.usefixtures("prefect")


def _missing(cli: Any) -> list[tuple[str, str, str]]:
    rows = json.loads(cli("missing", "--json").out)
    return sorted((r["endpoint"], r["kb"] or r["package_id"], r["reason"]) for r in rows)


def _within(seconds: float, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """fn(...) on a daemon thread: a cluster that never runs the tasks fails the test instead
    of hanging the whole run."""
    import threading

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"no result after {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def _counts(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k not in ("scan_id", "install_jobs", "unchanged")}


def test_scan_on_a_dask_cluster_matches_the_default_run(cli: Any, sqlite_home: Path,
                                                        tmp_path: Path) -> None:
    from distributed import Client, LocalCluster, get_task_stream

    from flows.scan import scan
    from patchflow import config

    _prepare(cli, tmp_path)
    baseline = scan({"all": True}, batch_size=1)
    expected = _missing(cli)
    assert baseline["status"] == "completed" and baseline["scanned"] == 4 and expected

    # Workers are separate processes: they inherit this environment (PATCHFLOW_HOME, the
    # database URL) and open their own sessions.
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with get_task_stream(client=client) as stream:
            # full: an incremental scan would keep these results and run no batch at all.
            by_parameter = _within(180, scan, {"all": True}, batch_size=1,
                                   task_runner=cluster.scheduler_address, full=True)
        assert _counts(by_parameter) == _counts(baseline)
        assert _missing(cli) == expected
        # One Dask task per batch of one endpoint, run by the cluster's worker processes.
        ran = [t for t in stream.data if str(t["key"]).startswith("scan_batch-")]
        assert len(ran) == 4, stream.data
        assert {t["worker"] for t in ran} <= set(client.scheduler_info()["workers"])

        config.write_config({"prefect": {"task_runner": "dask",
                                         "dask_address": cluster.scheduler_address}})
        by_config = _within(180, scan, {"all": True}, batch_size=2, full=True)
        assert _counts(by_config) == _counts(baseline)
        assert _missing(cli) == expected


def test_unknown_task_runner_is_one_clear_line(sqlite_home: Path) -> None:
    from flows import task_runners
    from patchflow.errors import UserError

    assert task_runners.resolve(None) == "default"
    assert task_runners.resolve("dask") == "dask"
    assert task_runners.resolve("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    with pytest.raises(UserError, match="unknown task runner 'ray'"):
        task_runners.resolve("ray")


@pytest.mark.parametrize("runner", ["default"])
def test_a_stop_after_the_first_batch_leaves_later_batches_unscanned(
        cli: Any, sqlite_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        runner: str) -> None:
    """The batches go through the flow's task runner (`scan_batch.map`); each checks the stop
    request before it starts, so a stop asked for while batch 1 runs ends the scan there."""
    from sqlalchemy import select, update

    from flows.scan import scan
    from models import Endpoint, Scan
    from models.db import session_scope
    from patchflow.scanning import service as scanning

    _prepare(cli, tmp_path)
    with session_scope() as session:
        before = {e.hostname: e.scan_state for e in session.scalars(select(Endpoint))}
    real = scanning.scan_batch
    scanned: list[list[int]] = []

    def first_then_stop(scan_id: int, endpoint_ids: list[int], catalog: Any) -> Any:
        counts = real(scan_id, endpoint_ids, catalog)
        scanned.append(list(endpoint_ids))
        with session_scope() as session:  # what `patchflow scan --stop` does
            session.execute(update(Scan).where(Scan.id == scan_id).values(stop_requested=True))
        return counts

    monkeypatch.setattr(scanning, "scan_batch", first_then_stop)
    summary = scan({"all": True}, batch_size=1, task_runner=runner, full=True)
    assert summary["status"] == "stopped" and summary["scanned"] == 1
    assert len(scanned) == 1  # batches 2-4 never ran
    with session_scope() as session:
        after = {e.id: (e.hostname, e.scan_state) for e in session.scalars(select(Endpoint))}
    untouched = [after[i] for i in after if i not in scanned[0]]
    assert len(untouched) == 3
    assert all(state == before[host] for host, state in untouched)


def test_only_transient_errors_are_retried() -> None:
    import smtplib

    import httpx
    from sqlalchemy.exc import DisconnectionError, OperationalError

    from patchflow.errors import UserError
    from tasks.retry import is_transient
    from tasks.scan import scan_batch

    request = httpx.Request("GET", "https://upstream.example/x")
    assert is_transient(OperationalError("SELECT 1", {}, Exception("server has gone away")))
    assert is_transient(DisconnectionError("lost"))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(httpx.ConnectError("refused", request=request))
    assert is_transient(httpx.HTTPStatusError(
        "503", request=request, response=httpx.Response(503, request=request)))
    assert is_transient(smtplib.SMTPServerDisconnected())
    assert is_transient(smtplib.SMTPResponseException(451, b"try later"))
    try:
        raise UserError("upstream failed") from ConnectionResetError()
    except UserError as exc:
        assert is_transient(exc)  # caused by a network error
    assert not is_transient(UserError("unknown patch server 'x'"))
    assert not is_transient(ValueError("bug"))
    assert not is_transient(OperationalError("SELECT", {}, Exception("no such table: x")))
    assert not is_transient(httpx.HTTPStatusError(
        "404", request=request, response=httpx.Response(404, request=request)))
    assert not is_transient(smtplib.SMTPResponseException(550, b"no such user"))
    # Said where the Prefect UI shows it.
    assert scan_batch.retries == 3 and scan_batch.retry_condition_fn is not None
    assert "transient errors only" in (scan_batch.description or "")


def test_io_retries_retry_a_lost_database_once_and_a_user_error_never() -> None:
    """Through Prefect's engine (the session's test server): the retry condition sees the
    task's own exception."""
    from prefect import flow, task
    from sqlalchemy.exc import OperationalError

    from patchflow.errors import UserError
    from tasks.retry import io_retries

    calls: list[str] = []
    options = {**io_retries("Test task (database)."), "retry_delay_seconds": [0, 0, 0]}

    @task(name="flaky", **options)
    def flaky(kind: str) -> str:
        calls.append(kind)
        if len(calls) == 1:
            raise (OperationalError("SELECT 1", {}, Exception("gone away"))
                   if kind == "db" else UserError("unknown patch server 'x'"))
        return "ok"

    @flow(name="patchflow-test-retries")
    def run(kind: str) -> str:
        return flaky(kind)

    assert run("db") == "ok" and calls == ["db", "db"]
    calls.clear()
    with pytest.raises(UserError):
        run("user")
    assert calls == ["user"]


def test_every_io_task_of_the_core_flows_has_transient_retries() -> None:
    import importlib

    from prefect import Task

    from tasks.retry import retry_condition

    no_io = {"build-reports", "write-report-files", "email-reports",  # mail retries itself
             "cycle-ring-delay",  # a sleep
             # A retried job creation could create two jobs (its transaction retries a
             # deadlock itself, patchflow.fleet.transactions.write_transaction).
             "cycle-create-install-job"}
    for name in ("scan", "sync", "install", "report", "feeds", "cycle"):
        module = importlib.import_module(f"tasks.{name}")
        for found in vars(module).values():
            if isinstance(found, Task) and found.name not in no_io:
                assert found.retries == 3 and found.retry_condition_fn is retry_condition, \
                    found.name
                assert "transient errors only" in (found.description or ""), found.name
