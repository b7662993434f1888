"""patchflow on a Prefect platform, as processes: CLI flow runs report to the home's `serve`
Prefect server (no temporary server of their own); without one the temporary server is said in
one line; the shipped deployments/prefect.yaml deploys with `prefect deploy --all` from the
checkout and a process worker runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from patchflow.ops.prefect_env import TEMPORARY_NOTICE
from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
from tests.faults.harness import query
from tests.support.paths import REPO
from tests.support.polling import free_port, wait_for

ROOT = REPO
# Real servers and CLI processes: each test takes 20-60 s on 2 cores.
pytestmark = pytest.mark.slow


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "PATCHFLOW_"))}
    env.update({"PATCHFLOW_HOME": str(home), "PYTHONPATH": str(ROOT),
                "PATCHFLOW_DATABASE_URL": f"sqlite:///{home / 'patchflow.db'}",
                "PATCHFLOW_INSTANCE": "lab", **extra})
    return env


def _post_like_prefects_client(url: str, attempts: int = 4) -> httpx.Response:
    """POST as Prefect's own client does, which retries a 503: the server answers one when its
    SQLite database stays locked past its timeout, which a 2-core machine running three test
    workers reached once (a transaction rolled back, nothing created)."""
    for _ in range(attempts - 1):
        response = httpx.post(url, json={}, timeout=10)
        if response.status_code != 503:
            return response
        time.sleep(1.0)
    return httpx.post(url, json={}, timeout=10)


def _cli(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _setup_home(home: Path) -> dict[str, str]:
    env = _env(home)
    for args in (("init", "--host", "localhost"),
                 ("server", "add", "local", "--host", "localhost", "--msrc-source",
                  str(MSRC_DIR), "--winget-source", str(WINGET_DIR), "--winget-packages",
                  ",".join(PACKAGES))):
        done = _cli(env, *args)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return env


@pytest.fixture(scope="module")
def served_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A home with a local folder patch server and its Prefect server started exactly as
    `patchflow serve` starts it (LocalPrefectServer, pid file under run/)."""
    from deployments.prefect_server import start_for_home

    home = tmp_path_factory.mktemp("served") / "home"
    _setup_home(home)
    server = start_for_home(home, free_port())
    try:
        server.wait_healthy()
        assert (home / "run" / "prefect-server.json").is_file()
        yield home, server.api_url
    finally:
        server.stop()


def test_cli_sync_reports_to_the_homes_prefect_server(served_home: tuple[Path, str]) -> None:
    home, api = served_home
    # A temporary server cannot start in this process: the sync must use the home's server.
    env = _env(home, PREFECT_SERVER_EPHEMERAL_ENABLED="false")
    del env["PATCHFLOW_HOME"]  # the home named by the root option is the one looked at
    started = time.monotonic()
    done = _cli(env, "--home", str(home), "sync", "local")
    took = time.monotonic() - started
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert TEMPORARY_NOTICE not in done.stderr
    assert not list((home / "run").glob("prefect-temp-*.json"))
    ((status, run_id),) = query(env["PATCHFLOW_DATABASE_URL"],
                                 "SELECT sync_status, sync_flow_run_id FROM patch_servers")
    assert status == "Successful" and run_id
    run = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()
    assert run["state"]["type"] == "COMPLETED", run
    flow = httpx.get(f"{api}/flows/{run['flow_id']}", timeout=10).json()
    assert flow["name"] == "patchflow-sync"
    print(f"CLI sync with the home's Prefect server: {took:.1f} s for the whole process")


def test_without_a_server_the_temporary_one_is_said_in_one_line(tmp_path: Path) -> None:
    env = _setup_home(tmp_path / "home")
    done = _cli(env, "sync", "local")
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert done.stderr.count(TEMPORARY_NOTICE) == 1, done.stderr
    # Commands that run no flow say nothing about Prefect.
    listed = _cli(env, "server", "list")
    assert listed.returncode == 0 and "Prefect" not in listed.stderr


def test_a_stale_pid_file_is_not_taken_for_a_server(sqlite_home: Path) -> None:
    from patchflow.ops import childproc, prefect_env

    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # Right parent, but the process is not a Prefect server.
        childproc.write_pid_file(sqlite_home / "run" / "prefect-server.json", holder.pid,
                                 host="127.0.0.1", port=free_port())
        assert prefect_env.home_server_url(wait=0.5) is None
    finally:
        holder.kill()
        holder.wait()
    assert prefect_env.home_server_url(wait=0.5) is None  # gone


def test_shipped_prefect_yaml_deploys_and_a_process_worker_runs_it(
        served_home: tuple[Path, str], tmp_path: Path) -> None:
    """The documented recipe, as shipped: `prefect deploy --all` from the checkout with the
    paths in the environment, then `prefect worker start --pool patchflow` (started elsewhere:
    the pull step finds the checkout through PATCHFLOW_CHECKOUT) runs the sync deployment."""
    home, api = served_home
    env = _env(home, PREFECT_API_URL=api, PATCHFLOW_CHECKOUT=str(ROOT))
    env.pop("PYTHONPATH")  # patchflow is installed; nothing leans on the test's import path

    def prefect(*args: str, cwd: Path = ROOT, timeout: float = 180) -> str:
        done = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, (args, done.stdout[-3000:], done.stderr[-3000:])
        return done.stdout

    prefect("work-pool", "create", "patchflow", "--type", "process")
    prefect("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    names = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    by_name = {d["name"]: d for d in names}
    assert set(by_name) == {"server-local@lab", "policy-workstations@lab", "reports@lab",
                            "feeds@lab"}
    sync = by_name["server-local@lab"]
    assert set(sync["tags"]) == {"patchflow", "sync", "instance:lab"}
    assert sync["work_pool_name"] == "patchflow"
    flow = httpx.get(f"{api}/flows/{sync['flow_id']}", timeout=10).json()
    assert flow["name"] == "patchflow-sync"

    created = _post_like_prefects_client(f"{api}/deployments/{sync['id']}/create_flow_run")
    assert created.status_code == 201, created.text  # what the API said, should it refuse
    run = created.json()
    elsewhere = tmp_path / "worker"
    elsewhere.mkdir()
    prefect("worker", "start", "--pool", "patchflow", "--run-once", cwd=elsewhere, timeout=300)
    state = httpx.get(f"{api}/flow_runs/{run['id']}", timeout=10).json()["state"]
    assert state["type"] == "COMPLETED", state
    url = env["PATCHFLOW_DATABASE_URL"]
    ((status, run_id),) = query(url, "SELECT sync_status, sync_flow_run_id FROM patch_servers")
    assert (status, run_id) == ("Successful", run["id"])
    assert query(url, "SELECT COUNT(*) FROM patches")[0][0] > 0


def test_stopping_a_cli_sync_that_reports_to_the_homes_server(
        served_home: tuple[Path, str]) -> None:
    """`sync NAME --stop` now reaches the home's Prefect server too: it must not force a
    Cancelling state onto a run that a CLI process runs in-process (nothing would kill it);
    the run sees the stop flag, ends Stopped in patchflow and Completed in Prefect."""
    import json

    from tests.support.httpserver import serve_files

    home, api = served_home
    env = _env(home, PREFECT_SERVER_EPHEMERAL_ENABLED="false")
    url = env["PATCHFLOW_DATABASE_URL"]
    with serve_files() as upstream:
        docs = []
        for month in ("Jan", "Feb", "Mar", "Apr", "May", "Jun"):
            upstream.files[f"/cvrf/v3.0/cvrf/2026-{month}"] = \
                (MSRC_DIR / "2026-Sep.json").read_bytes()
            docs.append({"ID": f"2026-{month}", "CurrentReleaseDate": "2026-09-08T07:00:00Z",
                         "CvrfUrl": f"{upstream.url}/cvrf/v3.0/cvrf/2026-{month}"})
        upstream.files["/cvrf/v3.0/updates"] = json.dumps({"value": docs}).encode()
        upstream.delay = 3.0
        added = _cli(env, "server", "add", "slow", "--host", "localhost", "--msrc-source",
                     f"{upstream.url}/cvrf/v3.0/", "--winget-source", "none")
        assert added.returncode == 0, added.stderr
        sync = subprocess.Popen([sys.executable, "-m", "cli.main", "sync", "slow"], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        try:
            def syncing() -> bool:
                rows = query(url, "SELECT sync_status, sync_message FROM patch_servers "
                                   "WHERE name = 'slow'")
                return bool(rows) and rows[0][0] == "Running" and \
                    "MSRC document" in (rows[0][1] or "")

            wait_for("the sync to be under way", syncing, timeout=180)
            stop = _cli(env, "sync", "slow", "--stop")
            assert stop.returncode == 0, stop.stderr
            out, err = sync.communicate(timeout=120)
        finally:
            if sync.poll() is None:
                sync.kill()
                sync.wait()
    ((status, run_id),) = query(url, "SELECT sync_status, sync_flow_run_id FROM patch_servers "
                                      "WHERE name = 'slow'")
    assert status == "Stopped", (out, err)
    state = httpx.get(f"{api}/flow_runs/{run_id}", timeout=10).json()["state"]
    assert state["type"] == "COMPLETED", state
