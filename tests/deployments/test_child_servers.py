"""Prefect servers patchflow starts die with it, and what a killed process left is cleaned up.

The real thing, as processes: a CLI `sync` (Prefect's temporary server) killed with SIGKILL
mid-sync takes its server with it; the next `patchflow serve` marks the orphaned flow run
Crashed and the sync "Failed: interrupted"; `serve` killed with SIGKILL takes its local Prefect
server with it and the next `serve` starts on the same port. Pid files cover a server the
kernel did not stop: the next start kills it when its parent is gone and its command line
still matches, and leaves anything else alone.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from patchflow.ops import childproc
from tests.faults.harness import query
from tests.support.httpserver import serve_files
from tests.support.paths import REPO
from tests.support.polling import free_port, wait_for

ROOT = REPO


def _gone(pid: int) -> bool:
    return not childproc.alive(pid)


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PATCHFLOW_HOME": str(home), "PYTHONPATH": str(ROOT),
                "PATCHFLOW_DATABASE_URL": f"sqlite:///{home / 'patchflow.db'}",
                "PREFECT_LOGGING_LEVEL": "INFO"})
    return env


def _cli(env: dict[str, str], *args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, (args, result.stdout, result.stderr)


def _sync_row(env: dict[str, str]) -> tuple[Any, ...] | None:
    rows = query(env["PATCHFLOW_DATABASE_URL"],
                 "SELECT sync_status, sync_message, sync_flow_run_id FROM patch_servers")
    return rows[0] if rows else None


def _start_serve(env: dict[str, str], log: Path, https: int, pport: int
                 ) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port",
             str(https), "--prefect-port", str(pport)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    mark = log.stat().st_size if log.exists() else 0

    def ready() -> bool:
        text = log.read_bytes()[mark:].decode("utf-8", "replace")
        assert proc.poll() is None, text
        return "scheduler ready" in text

    wait_for("`patchflow serve` to be ready", ready, timeout=180)
    return proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_killed_sync_and_killed_serve_leave_no_server_and_no_running_record(
        tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path / "home"
    env = _env(home)
    https, pport = free_port(), free_port()
    log = tmp_path / "serve.log"
    procs: list[subprocess.Popen[bytes]] = []
    with serve_files() as upstream:
        upstream.delay = 300.0  # the MSRC feed never answers in time: the sync stays running
        upstream.files["/updates"] = b'{"value": []}'
        _cli(env, "init", "--host", "localhost")
        _cli(env, "server", "add", "local", "--host", "localhost", "--msrc-source",
             upstream.url + "/", "--winget-source", "none")
        try:
            # 1. A CLI sync (no PREFECT_API_URL: Prefect's temporary server), killed mid-sync.
            with (tmp_path / "sync.log").open("wb") as out:
                sync = subprocess.Popen([sys.executable, "-m", "cli.main", "sync", "local"],
                                        cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
            procs.append(sync)
            wait_for("the sync to be running", lambda: (row := _sync_row(env)) is not None
                     and row[0] == "Running" and row[2], timeout=180)
            pid_files = list((home / "run").glob("prefect-temp-*.json"))
            assert len(pid_files) == 1
            temp_server = json.loads(pid_files[0].read_text())["pid"]
            assert childproc.alive(temp_server) and os.getpgid(temp_server) == temp_server
            sync.kill()
            sync.wait(10)
            wait_for("the temporary Prefect server to die with the CLI",
                     lambda: _gone(temp_server), timeout=30)
            run_id = _sync_row(env)[2]  # type: ignore[index]

            # 2. The next serve marks the orphaned flow run Crashed and the sync interrupted.
            serve = _start_serve(env, log, https, pport)
            procs.append(serve)
            wait_for("the orphaned sync to be marked", lambda: _sync_row(env)[0] == "Failed",
                     timeout=180)
            _status, message, _ = _sync_row(env)  # type: ignore[misc]
            assert "interrupted" in message and "died" in message
            api = f"http://127.0.0.1:{pport}/api"
            with temporary_settings(updates={PREFECT_API_URL: api}), \
                    get_client(sync_client=True) as client:
                state = client.read_flow_run(run_id).state
            assert state is not None and state.name == "Crashed"
            assert "died" in (state.message or "")

            # 3. serve killed: its local Prefect server goes too; the next serve starts on
            # the same port.
            record = json.loads((home / "run" / "prefect-server.json").read_text())
            assert record["port"] == pport and record["parent"] == serve.pid
            serve.kill()
            serve.wait(10)
            wait_for("the local Prefect server to die with serve",
                     lambda: _gone(record["pid"]), timeout=60)
            again = _start_serve(env, log, https, pport)
            procs.append(again)
            record2 = json.loads((home / "run" / "prefect-server.json").read_text())
            assert record2["pid"] != record["pid"] and record2["parent"] == again.pid
        finally:
            for proc in procs:
                _stop(proc)
    assert not (home / "run" / "prefect-server.json").exists()  # a clean stop removes it


def _impostor(*words: str) -> subprocess.Popen[bytes]:
    """A process whose command line looks like a server patchflow started (in its own
    session, as patchflow starts them) but without a parent-death signal."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", *words],
                            start_new_session=True)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _pid_file(path: Path, pid: int, parent: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"pid": pid, "started": childproc.start_time(pid),
                                "parent": parent, "parent_started": None, "port": 1}))


def test_a_leftover_server_is_killed_at_the_next_start(sqlite_home: Path) -> None:
    from deployments.prefect_server import LocalPrefectServer
    from patchflow.errors import UserError
    from patchflow.ops import prefect_env

    local = LocalPrefectServer(free_port(), sqlite_home / "logs" / "p.log")
    temp_file = sqlite_home / "run" / "prefect-temp-1.json"
    stale_local = _impostor("prefect", "server", "start")
    stale_temp = _impostor("uvicorn", "prefect.server.api.server:create_app")
    unrelated = _impostor("something", "else")
    try:
        dead = _dead_pid()
        # A pid file whose patchflow still runs (this test): in use, refused, not killed.
        _pid_file(local.pid_file, stale_local.pid, os.getppid())  # live, not this process
        with pytest.raises(UserError, match="another patchflow"):
            local.clean_stale()
        assert stale_local.poll() is None

        # Parent gone: killed (its whole session), file removed.
        _pid_file(local.pid_file, stale_local.pid, dead)
        assert local.clean_stale() == stale_local.pid
        assert stale_local.wait(15) is not None and not local.pid_file.exists()

        _pid_file(temp_file, stale_temp.pid, dead)
        assert prefect_env.clean_stale_temporary_servers() == [stale_temp.pid]
        assert stale_temp.wait(15) is not None and not temp_file.exists()

        # A pid file naming a process that is not what was started: the file goes, the
        # process stays.
        _pid_file(temp_file, unrelated.pid, dead)
        assert prefect_env.clean_stale_temporary_servers() == []
        assert unrelated.poll() is None and not temp_file.exists()
    finally:
        for proc in (stale_local, stale_temp, unrelated):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


def test_a_child_started_with_the_parent_death_signal_dies_with_its_parent(
        tmp_path: Path) -> None:
    pid_path = tmp_path / "child.pid"
    script = (
        "import subprocess, sys, time\n"
        "from patchflow.ops import childproc\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'],\n"
        "                         start_new_session=True, preexec_fn=childproc.die_with_parent())\n"
        f"open({str(pid_path)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(300)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        child = int(wait_for("the child", lambda: pid_path.exists() and pid_path.read_text(),
                             timeout=180))
        assert childproc.alive(child)
        parent.kill()
        parent.wait(10)
        wait_for("the child to die with its parent", lambda: _gone(child), timeout=15)
    finally:
        if parent.poll() is None:
            parent.kill()


def test_work_of_a_dead_process_of_this_host_is_closed_and_no_other(home: Path) -> None:
    """One check (`childproc.ended`) for both records of which process runs some work: a
    scan's message (patchflow.scanning.service, any scan) and a flow run's `host:pid`
    (deployments/orphans.py). A process of this host that is gone, also one killed but not
    yet reaped by its parent, ends its work; a live one, another machine's, or a record that
    names none do not."""
    from sqlalchemy import select

    from deployments.orphans import dead_process
    from models import Scan
    from models.db import session_scope
    from patchflow.scanning.service import close_dead_scans

    host = socket.gethostname()
    dead = _dead_pid()
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        os.waitid(os.P_PID, zombie.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped
        messages = {
            "dead": f"running in process {dead} on {host}",
            "zombie": f"running in process {zombie.pid} on {host}",
            "live": f"running in process {os.getpid()} on {host}",
            "elsewhere": f"running in process {dead} on another-host.example",
            "unrecorded": "started before processes were recorded",
        }
        with session_scope() as session:
            session.add_all(Scan(trigger="manual", scope=scope, status="running",
                                 message=message) for scope, message in messages.items())
        with session_scope() as session:
            assert close_dead_scans(session) == 2
        with session_scope() as session:
            status = dict(session.execute(select(Scan.scope, Scan.status)).tuples().all())
        assert status == {"dead": "failed", "zombie": "failed", "live": "running",
                          "elsewhere": "running", "unrecorded": "running"}

        assert dead_process(f"{host}:{dead}") == dead
        assert dead_process(f"{host}:{zombie.pid}") == zombie.pid
        assert dead_process(f"{host}:{os.getpid()}") is None
        assert dead_process(f"another-host.example:{dead}") is None
        assert dead_process(None) is None and dead_process(str(dead)) is None
    finally:
        zombie.wait(10)


def test_a_detached_cli_run_has_its_own_session_and_appends_to_its_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What `install start` and a console cycle run start (patchflow.ops.childproc.spawn_cli):
    a CLI command in a session of its own, so a Ctrl+C in the terminal does not reach it, with
    this process's environment and its output added to the log, never replacing it."""
    log = tmp_path / "logs" / "run.log"
    monkeypatch.setenv("PATCHFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    outputs = []
    for _ in range(2):
        pid = childproc.spawn_cli(["--home", str(tmp_path / "home"), "--help"], log)
        assert os.getsid(pid) == pid != os.getsid(0)
        wait_for("the detached run to end", lambda p=pid: _gone(p), timeout=60)
        outputs.append(log.read_text())
    assert outputs[0].count("Usage: patchflow") == 1
    assert outputs[1].count("Usage: patchflow") == 2
