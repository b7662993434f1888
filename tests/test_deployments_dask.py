"""Scale-out: the scan flow's batches on a Dask cluster (two worker processes) give exactly the
results of the default in-process run, chosen by the flow parameter or by patchflow.toml."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_scan_flow import _prepare

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
    return {k: v for k, v in summary.items() if k not in ("scan_id", "install_jobs")}


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
            by_parameter = _within(180, scan, {"all": True}, batch_size=1,
                                   task_runner=cluster.scheduler_address)
        assert _counts(by_parameter) == _counts(baseline)
        assert _missing(cli) == expected
        # One Dask task per batch of one endpoint, run by the cluster's worker processes.
        ran = [t for t in stream.data if str(t["key"]).startswith("scan_batch-")]
        assert len(ran) == 4, stream.data
        assert {t["worker"] for t in ran} <= set(client.scheduler_info()["workers"])

        config.write_config({"prefect": {"task_runner": "dask",
                                         "dask_address": cluster.scheduler_address}})
        by_config = _within(180, scan, {"all": True}, batch_size=2)
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
