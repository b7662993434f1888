"""The agent's loop: inventory at start and every N hours, job polls every M seconds with
jitter (so ten thousand agents restarted together do not poll in lockstep), exponential backoff
while the server is unreachable, and results delivered from the on-disk outbox: a result the
server cannot take yet waits there, retried each cycle, while new jobs keep running.

After jobs ran, the results go out first, then the restart (when a job allowed and needed one),
then a fresh inventory, so the server rescans the endpoint and the installed patches drop off
its missing list.

An inventory goes as a delta against the last one the server acknowledged (kept in the state
directory) while the last whole upload is recent; the server refusing a delta, for whatever
reason, costs one whole upload, never a lost inventory."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.delta import inventory_delta
from agent.install import InstallSpec, JobExecutor
from agent.platforms.base import Platform
from agent.state import StateDir
from agent.transport import (
    AgentError,
    RequestRefused,
    ServerClient,
    ServerUnreachable,
    inventory_digest,
)

log = logging.getLogger("patchflow.agent")

INVENTORY_PATH = "/api/v1/agent/inventory"
JOBS_PATH = "/api/v1/agent/jobs"


class AgentRevoked(Exception):
    """The server no longer accepts this agent's credentials (401/403)."""


@dataclass
class Schedule:
    inventory_every: float = 6 * 3600.0
    poll_every: float = 60.0
    jitter: float = 0.2  # ± this fraction of each wait
    backoff_start: float = 5.0
    backoff_max: float = 900.0
    full_inventory_every: float = 24 * 3600.0  # deltas in between


class AgentRunner:
    def __init__(self, client: ServerClient, state: StateDir, platform: Platform,
                 schedule: Schedule | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.state = state
        self.platform = platform
        self.schedule = schedule or Schedule()
        self.sleep = sleep
        self.clock = clock
        # The age of the last full upload survives restarts, so it is wall-clock time.
        self.wall_clock = wall_clock
        self._rng = random.Random()
        self.executor = JobExecutor(client, state, platform, progress=self._progress)
        self._installed = False  # a job ran an installer: send a fresh inventory
        self._restart = False  # a job needs (and allows) a restart

    # --- one step each -----------------------------------------------------------------------

    def upload_inventory(self) -> dict[str, Any]:
        doc = self.platform.collect_inventory()
        digest = inventory_digest(doc)
        saved = self.state.load_inventory()
        ack: dict[str, Any] | None = None
        if saved is not None and saved[1] != digest and self._delta_allowed(saved[2]):
            ack = self._send_delta(saved[0], saved[1], doc, digest)
        delta = ack is not None
        if ack is None:
            ack = self._send_full(doc, digest)
        # A delta, or an inventory the server already held, is no fresh full upload: the last
        # one's time is kept.
        keep = delta or bool(ack.get("unchanged"))
        full_at = saved[2] if saved is not None and keep else self.wall_clock()
        try:
            self.state.save_inventory(doc, digest, full_at)
        except OSError as exc:
            # The next delta names a digest the server no longer holds: refused, then whole.
            log.warning("inventory sent but not remembered: %s", exc)
        return ack

    def _delta_allowed(self, full_at: float) -> bool:
        """A wall clock set back (age below zero) is not trusted to say "recent"."""
        return 0.0 <= self.wall_clock() - full_at < self.schedule.full_inventory_every

    def _send_full(self, doc: dict[str, Any], digest: str) -> dict[str, Any]:
        # The server answers an inventory it already holds "unchanged", without parsing it.
        conditional = {"If-None-Match": f'"{digest}"'}
        ack = dict(self._call("PUT", INVENTORY_PATH, doc, headers=conditional) or {})
        if ack.get("unchanged"):
            log.info("inventory unchanged since the last upload (%s programs, %s updates)",
                     ack.get("programs"), ack.get("updates"))
        else:
            log.info("inventory sent: %s programs, %s updates", ack.get("programs"),
                     ack.get("updates"))
        return ack

    def _send_delta(self, old: dict[str, Any], old_digest: str, doc: dict[str, Any],
                    digest: str) -> dict[str, Any] | None:
        """The ack, or None when the whole document must go instead: a delta that cannot be
        computed, or one the server refuses (412: it holds another base or the delta does not
        apply; 404/405: an older server; anything 4xx). 401/403 leave as AgentRevoked and
        5xx or no answer as ServerUnreachable, as for any other call."""
        try:
            body = inventory_delta(old, doc, digest)
        except Exception as exc:
            log.info("inventory changes not computed (%s): sending the whole inventory", exc)
            return None
        try:
            ack = self._call("PATCH", INVENTORY_PATH, body,
                             headers={"If-Match": f'"{old_digest}"'})
        except RequestRefused as exc:
            log.info("the server wants the whole inventory (%s: %s): sending it", exc.status,
                     exc.message)
            return None
        log.info("inventory changes sent: +%d/-%d programs, +%d/-%d updates",
                 len(body["programs_added"]), len(body["programs_removed"]),
                 len(body["updates_added"]), len(body["updates_removed"]))
        return dict(ack or {})

    def flush_results(self) -> int:
        """Deliver queued results oldest first; returns how many left the outbox.

        A result the server answers 5xx or 429 for stays in the outbox and is retried next
        cycle, while the other jobs' results go on (one job's later results wait behind it, so
        each job's order is kept): one result the server cannot store must not stop the agent
        from reporting and from polling for new work. No answer at all ends the round with
        ServerUnreachable, as every further call would fail alike. A result the server refuses
        (4xx: unknown job) is dropped, not retried forever."""
        sent = 0
        held: set[int] = set()
        for path, job_id, result in self.state.pending_results():
            if job_id in held:
                continue
            try:
                self._call("POST", f"{JOBS_PATH}/{job_id}/result", result)
            except RequestRefused as exc:
                log.warning("job %s result dropped: %s", job_id, exc.message)
            except ServerUnreachable as exc:
                if exc.status is None:
                    raise
                held.add(job_id)
                log.warning("job %s result kept in the outbox for the next cycle: %s",
                            job_id, exc)
                continue
            path.unlink(missing_ok=True)
            sent += 1
        return sent

    def poll_jobs(self) -> int:
        """Run the jobs offered; each result is on disk before the next job starts. An attempt
        that already ran here (its result not yet heard by the server) is not run again."""
        jobs = self._call("GET", JOBS_PATH) or []
        for job in jobs:
            attempt = int(job.get("attempt") or 1)
            if self.state.has_run(int(job["id"]), attempt):
                continue
            result = self._run_job(job)
            self.state.queue_result(int(job["id"]), result)
            self.state.mark_run(int(job["id"]), attempt)
            details = result.get("details") or {}
            self._installed |= "exit_code" in result and result["exit_code"] is not None
            self._restart |= bool(details.get("restart"))
        return len(jobs)

    def after_jobs(self) -> None:
        """Once results are flushed: restart if a job asked for it, then a fresh inventory."""
        if self._restart:
            self._restart = False
            log.warning("restarting to complete updates")
            self.platform.restart()
        if self._installed:
            self._installed = False
            self._upload_inventory_logged()

    def _run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        try:
            return self.executor.run(job)
        except Exception as exc:  # a job must end with a result, whatever went wrong
            log.exception("job %s crashed", job.get("id"))
            return {"state": "failed", "message": f"agent error: {type(exc).__name__}: {exc}"}

    def _progress(self, state: str, spec: InstallSpec) -> None:
        """Best effort: a lost progress update costs nothing, the final result is what counts."""
        try:
            self._call("POST", f"{JOBS_PATH}/{spec.job_id}/result",
                       {"state": state, "details": {"attempt": spec.attempt}})
        except AgentRevoked:
            raise
        except AgentError as exc:
            log.info("job %s: progress not sent: %s", spec.job_id, exc)

    def _call(self, method: str, path: str, body: Any = None,
              headers: dict[str, str] | None = None) -> Any:
        try:
            return self.client.request(method, path, body, headers=headers)
        except RequestRefused as exc:
            if exc.status in (401, 403):
                raise AgentRevoked(exc.message) from None
            raise

    # --- loops -------------------------------------------------------------------------------

    def run_once(self) -> dict[str, int]:
        """One full cycle; ServerUnreachable propagates with results still on disk."""
        self.upload_inventory()
        sent = self.flush_results()
        jobs = self.poll_jobs()
        sent += self.flush_results()
        self.after_jobs()
        return {"jobs": jobs, "results_sent": sent}

    def jittered(self, seconds: float) -> float:
        spread = seconds * self.schedule.jitter
        return max(0.0, seconds + self._rng.uniform(-spread, spread))

    def _upload_inventory_logged(self) -> None:
        """In the long-running loop a failed collection (a locked registry hive, a bad simulated
        file) or a refused document is logged and retried at the next interval; only an
        unreachable server or a revoked agent leave the loop's normal course."""
        try:
            self.upload_inventory()
        except (ServerUnreachable, AgentRevoked):
            raise
        except RequestRefused as exc:
            log.error("inventory refused: %s", exc.message)
        except Exception as exc:
            log.error("inventory not collected: %s", exc)

    def run_forever(self, stop: Callable[[], bool] = lambda: False) -> None:
        """Until stop() or the agent is revoked (AgentRevoked propagates)."""
        next_inventory = self.clock()
        backoff = 0.0
        while not stop():
            try:
                if self.clock() >= next_inventory:
                    self._upload_inventory_logged()
                    next_inventory = self.clock() + self.jittered(self.schedule.inventory_every)
                self.flush_results()
                self.poll_jobs()
                self.flush_results()
                self.after_jobs()
                backoff = 0.0
                wait = self.jittered(self.schedule.poll_every)
            except RequestRefused as exc:
                log.error("server refused a request: %s", exc.message)
                wait = self.jittered(self.schedule.poll_every)
            except ServerUnreachable as exc:
                backoff = min(self.schedule.backoff_max,
                              max(self.schedule.backoff_start, backoff * 2))
                wait = self.jittered(backoff)
                log.warning("%s; retrying in %.0f s", exc, wait)
            self.sleep(wait)
