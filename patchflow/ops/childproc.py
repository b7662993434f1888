"""Child servers that die with their parent, and pid files for the ones that did not.

patchflow starts Prefect servers as child processes (`serve`'s local server, the temporary
server of a CLI flow run). If the parent is killed (SIGKILL, OOM killer, power button on a
terminal), nothing stops them: the next `serve` finds its port taken. Two layers keep that from
happening:

- on Linux the child asks the kernel for a signal when its parent dies (PR_SET_PDEATHSIG,
  set in the child between fork and exec); the signal follows the *thread* that started the
  child, so it is only used from the main thread, which lives as long as the process;
- every such child is written to a pid file under PATCHFLOW_HOME/run with its parent, both
  with their start times (pids are reused), and the next start kills a child whose parent is
  gone and whose command line still matches what was started, then removes the file.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn that makes the child receive `sig` when this process dies; None where the
    kernel cannot do it (not Linux, or not the main thread): the pid file then covers it."""
    if not sys.platform.startswith("linux"):
        return None
    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)  # loaded here: nothing to import after fork
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the line above: go now
            os._exit(1)

    return preexec


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat from field 3 (state) on; empty when unknown or gone (not Linux)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return []
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    return stat.rpartition(")")[2].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (Linux), None when unknown/gone."""
    try:
        return int(stat_fields(pid)[19])  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def _state(pid: int) -> str | None:
    fields = stat_fields(pid)
    return fields[0] if fields else None


def alive(pid: int, started: int | None = None) -> bool:
    """Whether `pid` runs and, when its recorded start time is given, is still that process."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    except OSError:
        return False
    if _state(pid) == "Z":  # exited, not yet reaped by its parent
        return False
    if started is not None:
        now = start_time(pid)
        if now is not None and now != started:
            return False  # the pid was reused by another process
        if now is None and sys.platform.startswith("linux"):
            return False  # zombie or gone meanwhile
    return True


def ended(host: str, pid: int) -> bool:
    """Whether process `pid` of machine `host`, recorded as doing some work (a scan, a flow
    run), is known to have ended, so that work can be closed. Unknown counts as running:
    another machine's process cannot be asked, nor can Windows (os.kill with signal 0 would
    send a Ctrl+C there)."""
    if host != socket.gethostname() or sys.platform == "win32":
        return False
    return not alive(pid)


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def write_pid_file(path: Path, pid: int, **extra: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"pid": pid, "started": start_time(pid), "parent": os.getpid(),
              "parent_started": start_time(os.getpid()), **extra}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, path)


def command_has(args: Sequence[str], marks: Sequence[str]) -> bool:
    """Whether a command line holds every string of `marks` (each within some argument)."""
    return all(any(mark in arg for arg in args) for mark in marks)


def read_pid_file(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("pid"), int):
        return None
    return record


def parent_alive(record: dict[str, Any]) -> bool:
    parent = record.get("parent")
    return isinstance(parent, int) and alive(parent, record.get("parent_started"))


def kill_group(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM to the child's process group (it was started in its own session), SIGKILL if it
    is still there after `timeout`."""
    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if hasattr(os, "killpg"):
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.1)
    send(getattr(signal, "SIGKILL", signal.SIGTERM))
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def reap_stale(path: Path, marks: Sequence[str]) -> int | None:
    """Kill the child a pid file names if its parent is gone, it is still the process that was
    started and its command line holds every string of `marks`; remove the file. Returns the
    pid killed, or None. A file whose parent still runs is left alone (that child is in use)."""
    record = read_pid_file(path)
    if record is None:
        path.unlink(missing_ok=True)
        return None
    if parent_alive(record):
        return None
    pid, killed = int(record["pid"]), None
    if alive(pid, record.get("started")):
        args = cmdline(pid) or []
        if args and command_has(args, marks):
            kill_group(pid)
            killed = pid
    path.unlink(missing_ok=True)
    return killed


def spawn_cli(args: Sequence[str], log: Path) -> int:
    """`patchflow ARGS` in a new session (a Ctrl+C in the terminal does not reach it), outliving
    whoever started it, with this process's environment and its output appended to `log`; its
    pid. For runs that must survive the command or request that asked for them."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args], stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
    return process.pid
