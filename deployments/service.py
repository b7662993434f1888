"""The scheduler half of `patchflow serve`: a Prefect Runner serving the deployments built from
the database, and a watcher that keeps them equal to it.

Why a Runner rather than `prefect.serve(...)`: `serve()` takes a fixed list of deployments and
blocks the main thread, while schedules here change at run time (an administrator edits one
through the CLI or the API) and the main thread belongs to the HTTPS server. Prefect 3.9's
Runner registers a deployment with `aadd_flow` at any time (its poller reads the registered
deployment ids on every poll), so the watcher re-reads the database every few seconds and
applies what changed, in the runner's own event loop, on a thread of its own.

The watcher also does what Prefect does not:
- "run if missed": at start-up, after a pause of the process or the machine (a jump in the wall
  clock), and when a paused deployment is resumed, a policy whose last scheduled scan time
  passed without a run gets one now (Prefect never backfills; `serve` pauses its deployments on
  shutdown, which drops the upcoming runs);
- stop requests: `patchflow sync NAME --stop`, `patchflow scan --stop` and the API set a stop
  flag in the database; for a run started by a deployment the watcher cancels the flow run, so
  the process is killed even when the flow is blocked in a download. The runner then runs the
  flow's cancellation hook (deployments/hooks.py), which marks the sync or scan Stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import sys
import threading
import time
import zoneinfo
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

import anyio
from sqlalchemy import select, update

from deployments.build import (
    SERVED_TAG,
    DeploymentSpec,
    instance_name,
    instance_tag,
    load_specs,
)
from deployments.schedules import missed_run

if TYPE_CHECKING:
    from prefect.runner import Runner

logger = logging.getLogger("patchflow.serve")

DEFAULT_REFRESH_SECONDS = 10.0


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the sys.stderr of the moment, not the one at start: a service whose stderr is
    replaced (a Windows service wrapper, a test's capture) never logs into a closed file."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging() -> None:
    """One line per event, in Prefect's format, so the service log reads as one stream."""
    root = logging.getLogger("patchflow")
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(
            "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        root.propagate = False


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@dataclass
class _Applied:
    fingerprint: str
    deployment_id: UUID
    spec: DeploymentSpec


@dataclass
class _MissedCandidate:
    policy: str
    rrule: str
    last_run: dt.datetime | None
    created: dt.datetime


@dataclass
class DeploymentWatcher:
    """Keeps the runner's deployments equal to the database. All methods run in the runner's
    event loop; database work goes to a worker thread so polling never stalls the runner."""

    runner: Runner
    timezone: str
    refresh_seconds: float = DEFAULT_REFRESH_SECONDS
    applied: dict[str, _Applied] = field(default_factory=dict)
    _paused: dict[UUID, bool] = field(default_factory=dict)
    _stops_seen: set[str] = field(default_factory=set)
    _last_tick: float = field(default_factory=time.time)

    # --- deployments ------------------------------------------------------------------------

    async def reconcile(self, startup: bool = False) -> list[str]:
        """Apply new and changed deployments, delete removed ones; returns what changed."""
        specs = {s.name: s for s in await anyio.to_thread.run_sync(load_specs, self.timezone)}
        changes: list[str] = []
        for name, spec in specs.items():
            known = self.applied.get(name)
            if known and known.fingerprint == spec.fingerprint():
                continue
            # At start-up every deployment is unpaused (the runner paused them on shutdown);
            # later, a deployment an administrator paused in the UI stays paused when its
            # schedule is edited.
            paused = False if known is None else self._paused.get(known.deployment_id, False)
            deployment_id = await self._apply(spec, paused)
            self.applied[name] = _Applied(spec.fingerprint(), deployment_id, spec)
            self._paused.setdefault(deployment_id, paused)
            changes.append(f"{'updated' if known else 'serving'} {spec.full_name}: "
                           f"{spec.description}")
        for name in [n for n in self.applied if n not in specs]:
            gone = self.applied.pop(name)
            await self._delete(gone.deployment_id)
            changes.append(f"removed {gone.spec.full_name}: its schedule was cleared")
        if startup:
            changes.extend(await self._delete_stale(set(specs)))
        return changes

    async def _apply(self, spec: DeploymentSpec, paused: bool) -> UUID:
        from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
        from prefect.schedules import RRule
        from prefect.types.entrypoint import EntrypointType

        from deployments.patchflow_flows import FLOWS

        return await self.runner.aadd_flow(
            FLOWS[spec.flow],
            name=spec.name,
            schedules=[RRule(spec.rrule, timezone=spec.timezone)],
            parameters=spec.parameters,
            # One run at a time per deployment; the next waits for the slot (ENQUEUE).
            concurrency_limit=ConcurrencyLimitConfig(
                limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
            paused=paused,
            tags=list(spec.tags),
            description=spec.description,
            entrypoint_type=EntrypointType.MODULE_PATH,
        )

    async def _delete(self, deployment_id: UUID) -> None:
        from prefect.client.orchestration import get_client
        from prefect.exceptions import ObjectNotFound

        async with get_client() as client:
            with contextlib.suppress(ObjectNotFound):
                await client.delete_deployment(deployment_id)
        # The runner has no public "remove"; without this it would keep asking for the runs
        # of a deployment that no longer exists (harmless, but a wasted query per poll).
        registry = getattr(self.runner, "_deployment_registry", None)
        ids = getattr(registry, "_deployment_ids", None)
        if isinstance(ids, set):
            ids.discard(deployment_id)
        self._paused.pop(deployment_id, None)

    async def _delete_stale(self, wanted: set[str]) -> list[str]:
        """Served deployments left from an earlier run whose schedule was cleared meanwhile;
        only this instance's: another installation sharing the Prefect server keeps its own."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterTags

        mine = instance_tag()
        async with get_client() as client:
            found = await client.read_deployments(deployment_filter=DeploymentFilter(
                tags=DeploymentFilterTags(all_=[SERVED_TAG])))
        changes = []
        for deployment in found:
            tags = set(deployment.tags or ())
            # Served before instance names existed (`sync/sync-local`): replaced by the new
            # names, so they go too.
            legacy = not any(t.startswith("instance:") for t in tags)
            if (mine in tags or legacy) and deployment.name not in wanted:
                await self._delete(deployment.id)
                changes.append(f"removed {deployment.name}: no schedule in the database")
        return changes

    async def refresh_paused(self) -> list[str]:
        """Names of deployments that were paused (in the UI) and have been resumed."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        ids = [a.deployment_id for a in self.applied.values()]
        if not ids:
            return []
        async with get_client() as client:
            found = await client.read_deployments(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=ids)))
        resumed = []
        for deployment in found:
            if self._paused.get(deployment.id) and not deployment.paused:
                resumed.append(deployment.name)
            self._paused[deployment.id] = bool(deployment.paused)
        return resumed

    # --- run if missed ----------------------------------------------------------------------

    async def run_missed(self, reason: str) -> list[str]:
        """Start a scan now for each run-if-missed policy whose last due time passed without a
        scheduled run; returns one line per run started."""
        from prefect.client.orchestration import get_client

        from models.base import utcnow

        tz = zoneinfo.ZoneInfo(self.timezone)
        now = utcnow()
        started: list[str] = []
        candidates = await anyio.to_thread.run_sync(_missed_candidates)
        by_policy = {a.spec.policy: a for a in self.applied.values() if a.spec.policy}
        async with get_client() as client:
            for c in candidates:
                applied = by_policy.get(c.policy)
                if applied is None or self._paused.get(applied.deployment_id):
                    continue
                due = missed_run(c.rrule, c.last_run, c.created, now, tz)
                if due is None:
                    continue
                run = await client.create_flow_run_from_deployment(
                    applied.deployment_id, tags=["run-if-missed"],
                    # Restarting twice in a row must not start the same catch-up twice.
                    idempotency_key=f"run-if-missed:{c.policy}:{due.isoformat()}",
                )
                await anyio.to_thread.run_sync(_record_missed_start, c.policy, now)
                started.append(f"policy {c.policy}: the scan due {due:%Y-%m-%d %H:%M %Z} was "
                               f"missed ({reason}); started flow run {run.name}")
        return started

    # --- stop requests ----------------------------------------------------------------------

    async def cancel_stop_requests(self) -> list[str]:
        """Cancel deployment runs whose sync or scan has a stop request. A request is acted on
        the second time it is seen: the CLI cancels the run itself when it can reach Prefect,
        and forcing "Cancelling" onto a run that has just become Cancelled would leave it
        stuck."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.objects import StateType
        from prefect.exceptions import ObjectNotFound
        from prefect.states import State

        requested = set(await anyio.to_thread.run_sync(_stop_requests))
        ready, self._stops_seen = requested & self._stops_seen, requested
        cancelled: list[str] = []
        if not ready:
            return cancelled
        async with get_client() as client:
            for run_id in sorted(ready):
                try:
                    run = await client.read_flow_run(UUID(run_id))
                except (ObjectNotFound, ValueError):
                    continue
                if run.deployment_id is None or run.state is None:
                    continue  # a flow called directly ignores cancellation; it sees the flag
                if run.state.is_final() or run.state.type == StateType.CANCELLING:
                    continue
                await client.set_flow_run_state(
                    run.id, State(type=StateType.CANCELLING, name="Cancelling",
                                  message="stop requested in patchflow"), force=True)
                cancelled.append(f"cancelling flow run {run.name}: stop requested")
        return cancelled

    # --- the loop ---------------------------------------------------------------------------

    async def tick(self) -> None:
        """One pass; a failing step logs one line and the next pass tries again."""
        now = time.time()
        gap, self._last_tick = now - self._last_tick, now
        for line in await self._step("applying schedules", self.reconcile):
            logger.info("%s", line)
        resumed = await self._step("reading deployment states", self.refresh_paused)
        for line in await self._step("handling stop requests", self.cancel_stop_requests):
            logger.info("%s", line)
        if resumed:
            await self.check_missed(f"deployment {', '.join(resumed)} resumed")
        if gap > 2 * self.refresh_seconds + 60:
            await self.check_missed(f"resumed after a pause of {gap:.0f} s")

    @staticmethod
    async def _step(what: str, step: Any) -> list[str]:
        try:
            return list(await step())
        except Exception as exc:
            logger.warning("%s failed: %s", what, _one_line(exc))
            return []

    async def check_missed(self, reason: str) -> None:
        """run_missed, logged; a failure is one warning (the next trigger tries again)."""
        for line in await self._step("run-if-missed check", lambda: self.run_missed(reason)):
            logger.info("%s", line)

    async def loop(self) -> None:
        while True:
            await anyio.sleep(self.refresh_seconds)
            await self.tick()


# --- database reads (run in a worker thread) ------------------------------------------------


def _missed_candidates() -> list[_MissedCandidate]:
    from deployments.schedules import scan_rrule
    from models import Policy
    from models.db import session_scope

    with session_scope() as session:
        rows = session.scalars(select(Policy).where(
            Policy.run_if_missed.is_(True), Policy.scan_weekday.is_not(None),
            Policy.scan_at.is_not(None)))
        return [
            _MissedCandidate(
                policy=p.name,
                rrule=scan_rrule(p.scan_weekday or "", p.scan_at or "", p.scan_every_weeks or 1,
                                 p.scan_start),
                last_run=p.last_scheduled_scan_at,
                created=p.scan_start or p.created_at,
            )
            for p in rows
        ]


def _record_missed_start(policy: str, at: dt.datetime) -> None:
    from models import Policy
    from models.db import session_scope

    with session_scope() as session:
        session.execute(update(Policy).where(Policy.name == policy)
                        .values(last_scheduled_scan_at=at))


def _stop_requests() -> list[str]:
    from models import PatchServer, Scan
    from models.db import session_scope
    from models.enums import SyncStatus

    with session_scope() as session:
        syncs = session.scalars(select(PatchServer.sync_flow_run_id).where(
            PatchServer.sync_status == SyncStatus.RUNNING,
            PatchServer.sync_stop_requested.is_(True),
            PatchServer.sync_flow_run_id.is_not(None)))
        scans = session.scalars(select(Scan.flow_run_id).where(
            Scan.status == "running", Scan.stop_requested.is_(True),
            Scan.flow_run_id.is_not(None)))
        return [r for r in [*syncs, *scans] if r]


# --- the thread -----------------------------------------------------------------------------


class SchedulerThread:
    """Runs the Runner and the watcher on a thread with its own event loop. `start()` returns
    at once (the HTTPS server starts meanwhile); `wait_ready()` waits until the deployments are
    applied and the runner polls, or the start failed (`error`)."""

    def __init__(self, api_url: str, timezone: str, refresh_seconds: float,
                 wait_for_api: float = 120.0, poll_seconds: float | None = None) -> None:
        self.api_url = api_url
        self.timezone = timezone
        self.refresh_seconds = refresh_seconds
        self.wait_for_api = wait_for_api
        self.poll_seconds = poll_seconds
        self.error: str | None = None
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="patchflow-scheduler",
                                        daemon=True)

    def start(self) -> SchedulerThread:
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        return self._ready.wait(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping.set()  # seen by a thread that has not created its loop yet
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout)

    def _main(self) -> None:
        from prefect.settings import PREFECT_API_URL, temporary_settings

        try:
            # The environment variable is set before Prefect is imported; this covers a
            # process that imported Prefect earlier (tests, an embedding application).
            with temporary_settings(updates={PREFECT_API_URL: self.api_url}):
                asyncio.run(self._amain())
        except Exception as exc:
            self.error = _one_line(exc)
            logger.error("scheduler stopped: %s", self.error)
        finally:
            self._ready.set()

    async def _amain(self) -> None:
        from prefect.runner import Runner

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        if self._stopping.is_set():
            return
        await wait_for_prefect(self.api_url, self.wait_for_api, self._stop)
        if self._stop.is_set():
            return
        runner = Runner(name=f"patchflow-{instance_name()}", query_seconds=self.poll_seconds,
                        pause_on_shutdown=True)
        watcher = DeploymentWatcher(runner, self.timezone, self.refresh_seconds)
        for line in await watcher.reconcile(startup=True):
            logger.info("%s", line)
        async with anyio.create_task_group() as group:
            group.start_soon(runner.start)
            while not runner.started:
                await anyio.sleep(0.05)
            await watcher.refresh_paused()
            await watcher.check_missed("start-up")
            logger.info("scheduler ready: %d deployment(s) served, schedules re-read every "
                        "%g s", len(watcher.applied), self.refresh_seconds)
            self._ready.set()
            with anyio.CancelScope() as watching:
                group.start_soon(_until, self._stop, watching)
                await watcher.loop()
            # Ctrl+C / SIGTERM: cancel in-flight runs (their hooks mark them Stopped), pause
            # the schedules, and let runner.start() return.
            logger.info("scheduler stopping")
            await runner.astop()


async def _until(event: asyncio.Event, scope: anyio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def wait_for_prefect(api_url: str, timeout: float, stop: asyncio.Event) -> None:
    """Until the API answers its health check; a clear error after `timeout` seconds."""
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    async with httpx.AsyncClient(timeout=5) as client:
        while not stop.is_set():
            try:
                response = await client.get(api_url.rstrip("/") + "/health")
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last = _one_line(exc)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect API at {api_url} did not answer within "
                                   f"{timeout:.0f} s ({last})")
            await anyio.sleep(0.25)
