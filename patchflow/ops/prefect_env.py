"""Prefect settings patchflow needs, applied before Prefect is first imported.

Prefect reads its settings at import time, so every entry point calls `configure()` first:
Prefect's home (and so its database) goes under PATCHFLOW_HOME, analytics are off for the
embedded server, and the logs stay at INFO without Prefect's own banner noise. It also makes
Prefect's temporary server (started by a CLI flow run when PREFECT_API_URL is not set) die with
the CLI process, and kills the ones a killed CLI process left behind.

`cli_prefect_api()` wraps every CLI command: when `patchflow serve` runs a local Prefect server
for this home (its pid file PATCHFLOW_HOME/run/prefect-server.json names a live `prefect server
start`), flows the command runs report to that server (they show in its UI and start in about a
second) instead of a temporary server on the same Prefect database; without one, one line on
stderr says that a temporary server is started.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import os
import socket
import subprocess
import sys
import time
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from patchflow import config
from patchflow.ops import childproc


def configure() -> None:
    os.environ.setdefault("PREFECT_HOME", str(config.home() / "prefect"))
    if config.home().is_dir():
        # Prefect's temporary server cannot create its SQLite file in a missing folder.
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("DO_NOT_TRACK", "1")  # no client telemetry notice in a terminal
    os.environ.setdefault("PREFECT_UI_ENABLED", "true")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # The temporary server waits up to this long to start on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    if "prefect" not in sys.modules and not any(isinstance(f, _BeforePrefectImport)
                                                for f in sys.meta_path):
        sys.meta_path.insert(0, _BeforePrefectImport())
    guard_temporary_servers()


class _BeforePrefectImport(importlib.abc.MetaPathFinder):
    """Creates PREFECT_HOME (with its parents) just before `prefect` is first imported.

    Prefect makes its home at import without parents and warns when it cannot, which on a fresh
    clone (no ./.patchflow yet) printed a UserWarning on the first line of `patchflow report`
    or the demo. Doing it here, not in configure(), keeps commands that never import Prefect
    (`--help`, `tls fingerprint`) from creating a home; reading the variable at import time
    follows a home the demo set after configure()."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname == "prefect" and os.environ.get("PREFECT_HOME"):
            with contextlib.suppress(OSError):  # then Prefect's own warning says why
                Path(os.environ["PREFECT_HOME"]).expanduser().mkdir(parents=True, exist_ok=True)
        return None  # the ordinary finders load it


# --- Prefect's temporary server dies with the CLI process that started it -------------------

_TEMP_MARKS = ("uvicorn", "prefect.server.api.server:create_app")
_SERVER_MODULE = "prefect.server.api.server"


def _run_dir() -> Path:
    return config.home() / "run"


# --- the home's Prefect server (`patchflow serve`) for CLI flow runs -------------------------

HOME_SERVER_FILE = "prefect-server.json"
SERVER_MARKS = ("prefect", "server", "start")  # its command line (deployments/prefect_server.py)
# Set while a CLI command runs with the home's server: `serve` must not take that for an
# administrator's PREFECT_API_URL (a second `serve` on one home is refused, not attached).
FROM_HOME_ENV = "PATCHFLOW_PREFECT_FROM_HOME"
TEMPORARY_NOTICE = ("note: no Prefect server runs for this home (`patchflow serve`) and "
                    "PREFECT_API_URL is not set: starting a temporary Prefect server for this "
                    "run (slower, and the run is in no UI)")
_announce = False


def home_server_file() -> Path:
    """The pid file of the local Prefect server `patchflow serve` runs for this home."""
    return _run_dir() / HOME_SERVER_FILE


def home_server_url(wait: float = 20.0) -> str | None:
    """The API URL of the local Prefect server `patchflow serve` runs for this home, or None.

    Trusts the pid file only while its process still is the `prefect server start` that was
    started and the `serve` that started it still runs (a stale file names nothing). A server
    that is still starting (port not open yet) is waited for up to `wait` seconds."""
    record = childproc.read_pid_file(home_server_file())
    if record is None or not isinstance(record.get("port"), int):
        return None
    pid = int(record["pid"])
    if not childproc.alive(pid, record.get("started")) or not childproc.parent_alive(record):
        return None
    args = childproc.cmdline(pid)
    if args is not None and not childproc.command_has(args, SERVER_MARKS):
        return None
    host = str(record.get("host") or "127.0.0.1")
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    port = int(record["port"])
    deadline = time.monotonic() + wait
    while not _port_open(host, port):
        if time.monotonic() > deadline or not childproc.alive(pid, record.get("started")):
            return None
        time.sleep(0.25)
    return f"http://{host}:{port}/api"


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _configured_api_url() -> str | None:
    """PREFECT_API_URL from the environment, or from Prefect's settings when Prefect is already
    imported (a test harness or an embedding application set it there)."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if "prefect.settings" in sys.modules:
        from prefect.settings import PREFECT_API_URL

        return PREFECT_API_URL.value() or None
    return None


@contextmanager
def cli_prefect_api() -> Iterator[str | None]:
    """For one CLI command: the Prefect API its flow runs report to (None: a temporary server,
    announced in one line on stderr if one is started). The environment variable covers Prefect
    imported later and the processes the command starts (install jobs); Prefect's settings
    context covers a process that imported Prefect already (tests)."""
    global _announce
    configured = _configured_api_url()
    if configured:
        yield configured
        return
    url = None
    with contextlib.suppress(OSError):
        url = home_server_url()
    if url is None:
        _announce = True
        try:
            yield None
        finally:
            _announce = False
        return
    os.environ["PREFECT_API_URL"] = os.environ[FROM_HOME_ENV] = url
    try:
        if "prefect.settings" in sys.modules:
            from prefect.settings import PREFECT_API_URL, temporary_settings

            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield url
        else:
            yield url
    finally:
        if os.environ.get("PREFECT_API_URL") == url:
            del os.environ["PREFECT_API_URL"]
        os.environ.pop(FROM_HOME_ENV, None)


def use_own_temporary_server() -> None:
    """For `patchflow demo`, which moves to a home of its own before Prefect is imported: its
    flow runs go to a temporary server on that home (which `demo --serve` then shows), never to
    an API set for the user's real home, and that server is expected, so it is not announced."""
    global _announce
    _announce = False
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop(FROM_HOME_ENV, None)


def clean_stale_temporary_servers() -> list[int]:
    """Kill the temporary Prefect servers of CLI processes that were killed; their pids."""
    folder = _run_dir()
    if not folder.is_dir():
        return []
    killed = []
    for path in folder.glob("prefect-temp-*.json"):
        pid = childproc.reap_stale(path, _TEMP_MARKS)
        if pid is not None:
            killed.append(pid)
    return killed


def guard_temporary_servers() -> None:
    """Make Prefect start its temporary server (a CLI flow run without PREFECT_API_URL) in its
    own session, with a parent-death signal and a pid file; clean up after killed ones first.

    Prefect imports its server module only when it needs that server, and importing it costs
    a second, so the hook waits for that import instead of doing it on every CLI command."""
    # A home we cannot read yet (`init` creates it): nothing of ours runs there.
    with contextlib.suppress(OSError):
        clean_stale_temporary_servers()
    module = sys.modules.get(_SERVER_MODULE)
    if module is not None:
        _patch_server_module(module)
    elif not any(isinstance(f, _AfterServerImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterServerImport())


def _patch_server_module(module: types.ModuleType) -> None:
    cls = getattr(module, "SubprocessASGIServer", None)
    if cls is None or getattr(cls, "_patchflow_guarded", False):
        return
    original = cls._run_uvicorn_command

    def run_uvicorn_command(self: Any) -> subprocess.Popen[Any]:
        real = subprocess.Popen

        def popen(*args: Any, **kwargs: Any) -> subprocess.Popen[Any]:
            if _announce:
                print(TEMPORARY_NOTICE, file=sys.stderr, flush=True)
            kwargs.setdefault("start_new_session", True)
            kwargs.setdefault("preexec_fn", childproc.die_with_parent())
            proc = real(*args, **kwargs)
            with contextlib.suppress(OSError):
                childproc.write_pid_file(_run_dir() / f"prefect-temp-{proc.pid}.json", proc.pid,
                                         port=getattr(self, "port", None))
            return proc

        shim = types.SimpleNamespace(**{k: getattr(subprocess, k) for k in dir(subprocess)
                                        if not k.startswith("__")})
        shim.Popen = popen
        module.subprocess = shim  # type: ignore[attr-defined]  # only for this call
        try:
            return original(self)  # type: ignore[no-any-return]
        finally:
            module.subprocess = subprocess  # type: ignore[attr-defined]

    original_stop = cls.stop

    def stop(self: Any) -> None:
        proc = getattr(self, "server_process", None)
        original_stop(self)
        if proc is not None:
            (_run_dir() / f"prefect-temp-{proc.pid}.json").unlink(missing_ok=True)

    cls._run_uvicorn_command = run_uvicorn_command
    cls.stop = stop
    cls._patchflow_guarded = True


class _AfterServerImport(importlib.abc.MetaPathFinder):
    """Patches Prefect's server module right after it is first imported."""

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: types.ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != _SERVER_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None and spec.loader is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_patch(module: types.ModuleType) -> None:
            exec_module(module)
            _patch_server_module(module)

        loader.exec_module = exec_then_patch  # type: ignore[method-assign]
        return spec
