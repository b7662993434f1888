"""`patchflow serve`: the HTTPS API and the Prefect runner in one command.

Order matters for a clean start and a clean stop:
1. the HTTPS side is checked and its port bound (a bad setting fails before Prefect starts);
2. Prefect: PREFECT_API_URL when set, else a local `prefect server start` on loopback (its URL
   goes into the environment before Prefect is first imported, so the runner, the flow-run
   processes and anything the API starts all talk to it); one a killed `serve` left behind is
   killed first, and the new one dies with this process (deployments/prefect_server.py);
   flow runs a killed process left Running are marked Crashed once the API answers;
3. the scheduler thread (deployments/service.py) waits for the API, applies the deployments and
   starts the runner, while uvicorn already answers agents on the main thread;
4. on Ctrl+C or SIGTERM uvicorn stops first, then the runner (cancelling in-flight runs and
   pausing the schedules through the API), and the local Prefect server last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from types import FrameType

from deployments.build import schedule_timezone
from deployments.prefect_server import DEFAULT_PORT, LocalPrefectServer
from deployments.service import DEFAULT_REFRESH_SECONDS, SchedulerThread, configure_logging
from patchflow import config
from patchflow.errors import UserError
from patchflow.ops import prefect_env

logger = logging.getLogger("patchflow.serve")


def _setting_float(section: str, key: str, default: float, low: float, high: float) -> float:
    raw = config.setting(section, key, default)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise UserError(f"[{section}] {key} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise UserError(f"[{section}] {key} must be between {low:g} and {high:g}")
    return value


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # uvicorn handles SIGTERM while it runs and raises it again once it has stopped; turning it
    # into KeyboardInterrupt here lets the runner and the Prefect server be stopped in order.
    raise KeyboardInterrupt


def _watchdog(scheduler: SchedulerThread, local: LocalPrefectServer | None,
              done: threading.Event) -> None:
    """If the scheduler or the local Prefect server dies, stop the whole service: running the
    API without its scheduler would look healthy while no scheduled work ever happens."""
    while not done.wait(1.0):
        reason = None
        if not scheduler.is_alive():
            reason = scheduler.error or "the scheduler stopped"  # already logged by it
        elif local is not None and local.exited() is not None:
            reason = (f"the local Prefect server exited with code {local.exited()}; "
                      f"last lines of {local.log_path}:\n{local.log_tail()}")
            logger.error("%s", reason)
        if reason:
            scheduler.error = scheduler.error or reason
            logger.error("stopping patchflow: the scheduled deployments cannot run")
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _flush_prefect_logs() -> None:
    """Send the run logs still queued (cancellation hooks log to the run) while the local
    Prefect server is up; otherwise Prefect's exit handler tries later and prints an error."""
    if "prefect.logging.handlers" not in sys.modules:
        return
    from prefect.logging.handlers import APILogWorker

    with contextlib.suppress(Exception):
        APILogWorker.drain_all(timeout=5)


def _resume_install_jobs() -> None:
    """Install jobs whose flow died with the previous server go on where the database says."""
    from patchflow.install.launch import resume_unfinished

    try:
        jobs = resume_unfinished()
    except Exception as exc:  # a failed resume must not keep the server from starting
        logger.warning("could not resume unfinished install jobs: %s", exc)
        return
    if jobs:
        logger.info("resumed unfinished install job(s) %s", ", ".join(map(str, jobs)))


def _reap_orphans(wait_for_api: float) -> None:
    """Flow runs a killed patchflow left Running (and the sync, scan and job records they left
    "running") are closed once the API answers: see deployments/orphans.py."""
    import time

    from prefect.client.orchestration import get_client

    from deployments.orphans import reap

    deadline = time.monotonic() + wait_for_api
    while True:
        try:
            with get_client(sync_client=True) as client:
                if client.api_healthcheck() is None:
                    break
        except Exception:  # not up yet
            pass
        if time.monotonic() > deadline:
            logger.warning("not checking for crashed flow runs: the Prefect API did not answer")
            return
        time.sleep(1.0)
    try:
        found = reap()
    except Exception as exc:  # bookkeeping must not stop the service
        logger.warning("could not check for flow runs left by a killed process: %s", exc)
        return
    if found["crashed"] or found["closed"]:
        logger.warning("marked %d flow run(s) crashed and closed %s left by a killed process",
                       len(found["crashed"]), ", ".join(found["closed"]) or "no record")


def serve(host: str, port: int, workers: int = 1, access_log: bool = True,
          scheduler: bool = True, prefect_port: int | None = None) -> int:
    """Blocks until interrupted; returns the exit code (1 when the scheduler failed)."""
    from server.run import prepare, run_prepared

    configure_logging()
    # Prefect 3.9's client telemetry prints a notice on the first run in a terminal; patchflow
    # keeps Prefect's analytics off on both sides (PREFECT_SERVER_ANALYTICS_ENABLED for the
    # server, DO_NOT_TRACK for the client), set before Prefect is imported.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    timezone = schedule_timezone() if scheduler else "UTC"
    refresh = _setting_float("schedule", "refresh_seconds", DEFAULT_REFRESH_SECONDS, 1, 3600)
    wait_for_api = _setting_float("prefect", "startup_timeout", 120, 5, 1800)
    pport = prefect_port or int(config.setting("prefect", "port", DEFAULT_PORT))
    if not 1 <= pport <= 65535:
        raise UserError(f"invalid Prefect port {pport}: must be between 1 and 65535")
    prepared = prepare(host, port, workers, access_log)
    if not scheduler:
        _resume_install_jobs()
        run_prepared(prepared)
        return 0

    previous = signal.signal(signal.SIGTERM, _interrupt)
    local: LocalPrefectServer | None = None
    thread: SchedulerThread | None = None
    done = threading.Event()
    try:
        api_url = os.environ.get("PREFECT_API_URL")
        if api_url and api_url == os.environ.get(prefect_env.FROM_HOME_ENV):
            # Found through the pid file of a running `serve` of this home, not set by an
            # administrator: start our own, which refuses a second `serve` in one line.
            api_url = None
            del os.environ["PREFECT_API_URL"]
        if api_url:
            logger.info("using the Prefect API at %s", api_url)
        else:
            local = LocalPrefectServer(pport, config.home() / "logs" / "prefect-server.log")
            local.start()
            api_url = local.api_url
            os.environ["PREFECT_API_URL"] = api_url
            logger.info("Prefect UI: %s (local Prefect server, log %s)", local.ui_url,
                        local.log_path)
        # Importing Prefect configures its logging, which resets uvicorn's loggers to WARNING
        # (no access log, no "Shutting down"): import it here, then restore uvicorn's.
        import prefect.main  # noqa: F401  (prefect itself loads lazily)

        prepared.config.configure_logging()
        thread = SchedulerThread(api_url, timezone, refresh, wait_for_api).start()
        threading.Thread(target=_watchdog, args=(thread, local, done), daemon=True,
                         name="patchflow-watchdog").start()
        threading.Thread(target=_reap_orphans, args=(wait_for_api,), daemon=True,
                         name="patchflow-orphans").start()
        _resume_install_jobs()
        run_prepared(prepared)
    except KeyboardInterrupt:
        pass
    finally:
        done.set()
        prepared.sock.close()
        try:
            if thread is not None:
                thread.stop()
        except KeyboardInterrupt:
            logger.warning("interrupted again: not waiting for the scheduler")
        finally:
            _flush_prefect_logs()
            if local is not None:
                local.stop()
            signal.signal(signal.SIGTERM, previous)
    if thread is not None and thread.error:
        return 1
    logger.info("patchflow stopped")
    return 0
