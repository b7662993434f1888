"""SIGKILL of the process driving an install job, just after it offered the item to the agent,
then a restart of the driver (`patchflow jobs resume`, what `patchflow serve` runs at start-up
for unfinished jobs): the job finishes, the item keeps its place and attempt (it is not offered
again), and the installer runs once."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import PATCHFLOW, Commands, query
from tests.faults.install_world import OPEN, PATCH, endpoint, install_server, ran
from tests.fixtures.agent.harness import Api
from tests.fixtures.install.agents import clean_fleet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, prefect: None) -> Iterator[Api]:
    """SQLite only: the kill comes after a commit, so no database has a transaction to lose;
    the sync, scan, backup and restore faults run on both databases."""
    with install_server("sqlite", tmp_path_factory.mktemp("driver-kill")) as api:
        yield api


def test_driver_killed_after_dispatch_then_resumed(api: Api, cli, prefect_api: str,
                                                    tmp_path: Path) -> None:
    clean_fleet(api.db_url)
    agent = endpoint(api, tmp_path, "WS-F", cli)
    commands = Commands(api.home, api.db_url, tmp_path / "prefect-home", prefect_api)
    try:
        commands.killed("install", "now", PATCH, "--endpoints", "WS-F", "--wait", "--json",
                        fault="install.after_dispatch")
        [(job_id, status)] = query(api.db_url, "SELECT id, status FROM install_jobs")
        [(item_id, state, attempts)] = query(
            api.db_url, "SELECT id, state, attempts FROM install_job_items")
        assert (status, state, attempts) == ("running", "dispatched", 1)

        # The restarted driver and the agent meet: the item dispatched before the kill is
        # picked up where it was, reported, and the job ends.
        resumed = subprocess.Popen([PATCHFLOW, "jobs", "resume", "--json"],
                                   env=commands.env(), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        agent.start()
        out, err = resumed.communicate(timeout=240)
        assert resumed.returncode == 0, (out, err[-3000:])
        assert "Traceback" not in err
        [summary] = json.loads(out)
        assert (summary["job_id"], summary["status"], summary["succeeded"]) == (job_id, "done", 1)
    finally:
        agent.stop()
    [(state, attempts, events)] = query(api.db_url, (
        "SELECT state, attempts, (SELECT COUNT(*) FROM install_item_events e "
        "WHERE e.item_id = i.id AND e.state = 'dispatched') FROM install_job_items i"))
    assert (state, attempts, events) == ("succeeded", 1, 1)  # offered once, not again
    assert [r["job"] for r in ran(agent)] == [item_id]  # the installer ran once
    assert not query(api.db_url, "SELECT id FROM install_job_items WHERE state IN "
                                 f"({', '.join(repr(s) for s in OPEN)})")
    assert "no unfinished install job" in cli("jobs", "resume").out
