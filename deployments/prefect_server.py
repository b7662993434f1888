"""A local Prefect server for `patchflow serve` when PREFECT_API_URL is not set.

Without it every patchflow process would start Prefect's temporary server (8-16 s each, no UI,
gone when the process ends). `patchflow serve` instead runs `prefect server start` on a loopback
port for as long as it runs: the runner, the flow runs and the UI all use it, and its database
stays under PATCHFLOW_HOME/prefect (PREFECT_HOME), so run history survives restarts.

The server runs in its own session (process group): Ctrl+C in the terminal reaches patchflow
only, which first stops the runner (that still needs the API to cancel runs and pause
schedules) and then stops the server.

If patchflow itself is killed (SIGKILL) the server must not outlive it, or the next `serve`
finds the port taken: on Linux the kernel sends it SIGTERM when patchflow dies, and the pid
file PATCHFLOW_HOME/run/prefect-server.json lets the next start kill a server left over anyway
(its parent gone, its command line still `prefect server start`); see patchflow/ops/childproc.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from patchflow.errors import UserError
from patchflow.ops import childproc, prefect_env

DEFAULT_PORT = 4200


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class LocalPrefectServer:
    """`prefect server start` as a child process; `api_url` and `ui_url` are known at once, the
    API answers a few seconds later (about 7 s on a fresh home on 2 cores)."""

    def __init__(self, port: int, log_path: Path, host: str = "127.0.0.1",
                 pid_file: Path | None = None) -> None:
        self.host, self.port, self.log_path = host, port, log_path
        self.pid_file = pid_file or prefect_env.home_server_file()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.ui_url}/api"

    def clean_stale(self) -> int | None:
        """Kill the server a killed patchflow left behind (named by the pid file); its pid.
        Refuses when the pid file's patchflow still runs: two `serve` on one home."""
        record = childproc.read_pid_file(self.pid_file)
        if record is not None and childproc.parent_alive(record) and \
                record.get("parent") != os.getpid():
            raise UserError(
                f"another patchflow (pid {record['parent']}) runs the local Prefect server of "
                f"this home (pid {record['pid']}, port {record.get('port')}); stop it first")
        return childproc.reap_stale(self.pid_file, prefect_env.SERVER_MARKS)

    def start(self) -> LocalPrefectServer:
        self.clean_stale()
        if not port_is_free(self.host, self.port):
            raise UserError(
                f"cannot start the local Prefect server: port {self.port} on {self.host} is in "
                "use (choose another with --prefect-port or [prefect] port, or set "
                "PREFECT_API_URL to use a Prefect server that is already running)")
        env = dict(os.environ)
        env.pop("PREFECT_API_URL", None)
        env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
        env.setdefault("DO_NOT_TRACK", "1")
        env.setdefault("PREFECT_UI_ENABLED", "true")
        env["PREFECT_SERVER_API_HOST"] = self.host
        env["PREFECT_SERVER_API_PORT"] = str(self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        Path(env.get("PREFECT_HOME", self.log_path.parent)).mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "prefect", "server", "start", "--host", self.host,
                 "--port", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, preexec_fn=childproc.die_with_parent(),
            )
        childproc.write_pid_file(self.pid_file, self._proc.pid, host=self.host, port=self.port)
        return self

    def exited(self) -> int | None:
        """The exit code when the server process has ended, else None."""
        return None if self._proc is None else self._proc.poll()

    def wait_healthy(self, timeout: float = 180.0) -> None:
        """Until the API answers its health check; a one-line error with the log's tail when the
        process ends or `timeout` seconds pass first."""
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(self.api_url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.exited() is not None or time.monotonic() > deadline:
                raise UserError(f"the Prefect server on port {self.port} did not start: "
                                + " | ".join(self.log_tail().splitlines()))
            time.sleep(0.5)

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            self.pid_file.unlink(missing_ok=True)
        if proc is None or proc.poll() is not None:
            return
        self._signal(proc, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(proc, signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
            proc.wait(5)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        # The server's process group is the one this class created (start_new_session), so
        # anything the server started goes too.
        try:
            if hasattr(os, "killpg"):
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LocalPrefectServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def start_for_home(home: Path, port: int) -> LocalPrefectServer:
    """The local server `patchflow serve` runs for `home` (its PREFECT_HOME, log and pid file),
    started from a process whose own environment names another home or none: tests and
    benchmarks that play `serve` beside the commands they run."""
    saved = dict(os.environ)
    os.environ.update({"PATCHFLOW_HOME": str(home), "PREFECT_HOME": str(home / "prefect")})
    os.environ.pop("PREFECT_API_URL", None)
    try:
        return LocalPrefectServer(port, home / "logs" / "prefect-server.log").start()
    finally:
        os.environ.clear()
        os.environ.update(saved)
