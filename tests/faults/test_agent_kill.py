"""SIGKILL of a real `patchflow-agent run` process while its installer runs, then a restart of
the agent: the job still ends (the item is not left "installing" for ever), the restarted agent
works (it reports, and the next install through it succeeds), and no installer ran twice.

SQLite only: what is tested is the agent and the job's end, not the database."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.harness import Commands, query
from tests.faults.install_world import OPEN, PATCH, endpoint, install_server, ran
from tests.fixtures.agent.harness import Api
from tests.fixtures.install.agents import clean_fleet

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, prefect: None) -> Iterator[Api]:
    with install_server("sqlite", tmp_path_factory.mktemp("agent-kill")) as api:
        yield api


def _install(cli: Any) -> dict[str, Any]:
    run = cli("install", "now", PATCH, "--endpoints", "WS-K", "--wait", "--json")
    assert run.code == 0 and "Traceback" not in run.err, run.err
    return dict(json.loads(run.out))


def test_agent_killed_mid_install_then_restarted(api: Api, cli, prefect_api: str,
                                                 tmp_path: Path) -> None:
    from patchflow import config

    clean_fleet(api.db_url)
    victim = endpoint(api, tmp_path, "WS-K", cli)
    victim.client.close()  # the real agent process is this endpoint from now on
    commands = Commands(api.home, api.db_url, tmp_path / "prefect-home", prefect_api)
    args = ["--state-dir", str(victim.state_dir), "run", "--platform", "simulated",
            "--inventory", str(victim.inventory_path), "--poll-seconds", "0.2"]
    log = tmp_path / "agent.log"
    first = commands.start_agent(*args, fault="agent.installing", log=log)
    agents: list[subprocess.Popen[bytes]] = [first]

    def restart_when_killed() -> None:
        first.wait(timeout=120)
        agents.append(commands.start_agent(*args, log=log))

    restarter = threading.Thread(target=restart_when_killed, daemon=True)
    restarter.start()
    config.write_config({"install": {"item_timeout_s": 8}})
    try:
        summary = _install(cli)  # waits for the job's end, however it ends
        assert first.returncode == -9, log.read_text()
        restarter.join(30)
        [(status,)] = query(api.db_url, "SELECT status FROM install_jobs")
        assert status == "done" and summary["items"] == 1
        [(state, attempts, message)] = query(
            api.db_url, "SELECT state, attempts, message FROM install_job_items")
        assert state not in OPEN and message, (state, message)
        # The killed installer never finished (the simulated one records a run at its end);
        # an item that still succeeded did so through one later attempt.
        assert len(ran(victim)) == (0 if state == "failed" else 1), (state, attempts)

        # The restarted agent reports and installs as before.
        config.write_config({"install": {"item_timeout_s": 60}})
        again = _install(cli)
        assert again["succeeded"] == 1, (again, log.read_text()[-3000:])
        assert agents[-1].poll() is None
        assert len(ran(victim)) == (1 if state == "failed" else 2)
    finally:
        config.write_config({"install": {"item_timeout_s": 60}})
        for process in agents:
            process.kill()
            process.wait(timeout=10)
