"""The agent loop's timing rules without a network: backoff while unreachable, jittered polls,
inventory every N hours, and the outbox kept in order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.platforms.simulated import InventoryFileError, SimulatedPlatform
from agent.runner import AgentRevoked, AgentRunner, Schedule
from agent.state import StateDir
from agent.transport import RequestRefused, ServerUnreachable, normalize_fingerprint
from tests.fixtures.agent.harness import base_inventory


class FakeClient:
    """Answers like the server would, or fails as scripted."""

    def __init__(self, failures: int = 0, jobs: list[dict[str, Any]] | None = None) -> None:
        self.failures = failures
        self.jobs = jobs or []
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Any:
        if self.failures:
            self.failures -= 1
            raise ServerUnreachable("cannot reach https://server:6201: refused")
        self.calls.append((method, path))
        if path.endswith("/inventory") and method == "PATCH":  # a delta carries the counts
            return {"programs": body["program_count"], "updates": body["update_count"]}
        if path.endswith("/inventory"):
            return {"programs": len(body["programs"]), "updates": len(body["updates"])}
        if path.endswith("/jobs"):
            jobs, self.jobs = self.jobs, []
            return jobs
        if "/result" in path and "/999/" in path:
            raise RequestRefused(404, "no job 999 for this agent")
        return {"accepted": True}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def platform(tmp_path: Path) -> SimulatedPlatform:
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(base_inventory("ws-sim", 3)), encoding="utf-8")
    return SimulatedPlatform(path)


def _runner(client: FakeClient, tmp_path: Path, platform: SimulatedPlatform,
            clock: Clock, **schedule: float) -> AgentRunner:
    return AgentRunner(client, StateDir(tmp_path / "state"), platform,  # type: ignore[arg-type]
                       Schedule(**schedule), sleep=clock.sleep, clock=clock)


def test_backoff_doubles_while_unreachable_then_polls_resume(
    tmp_path: Path, platform: SimulatedPlatform
) -> None:
    clock = Clock()
    client = FakeClient(failures=8)
    runner = _runner(client, tmp_path, platform, clock, poll_every=60, jitter=0.0,
                     backoff_start=5, backoff_max=300)
    runner.run_forever(stop=lambda: len(clock.waits) >= 11)
    assert clock.waits == [5, 10, 20, 40, 80, 160, 300, 300, 60, 60, 60]
    # Once back, the pending inventory goes first, then polls.
    assert client.calls[0] == ("PUT", "/api/v1/agent/inventory")
    assert [c for c in client.calls if c[1].endswith("/inventory")] == [client.calls[0]]


def test_polls_are_jittered_and_inventory_follows_its_own_interval(
    tmp_path: Path, platform: SimulatedPlatform
) -> None:
    clock = Clock()
    client = FakeClient()
    runner = _runner(client, tmp_path, platform, clock, poll_every=60, jitter=0.2,
                     inventory_every=3600)
    runner.run_forever(stop=lambda: clock.now > 3 * 3600)
    assert all(48 <= wait <= 72 for wait in clock.waits)
    assert len(set(clock.waits)) > 10  # not lockstep
    uploads = [c for c in client.calls if c[1].endswith("/inventory")]
    assert 3 <= len(uploads) <= 5


def test_the_loop_sends_a_changed_inventory_as_a_delta(
    tmp_path: Path, platform: SimulatedPlatform
) -> None:
    clock = Clock()
    client = FakeClient()
    runner = _runner(client, tmp_path, platform, clock, poll_every=600, jitter=0.0,
                     inventory_every=3600)

    def stop() -> bool:
        if clock.now == 1800:  # an install between two inventories
            doc = platform.load_inventory()
            doc["programs"].pop()
            platform.save_inventory(doc)
        return clock.now > 3 * 3600

    runner.run_forever(stop=stop)
    uploads = [method for method, path in client.calls if path.endswith("/inventory")]
    assert uploads == ["PUT", "PATCH", "PUT", "PUT"]  # then unchanged: If-None-Match again


def test_jobs_results_go_through_the_outbox_in_order(
    tmp_path: Path, platform: SimulatedPlatform
) -> None:
    clock = Clock()
    client = FakeClient(jobs=[{"id": 3}, {"id": 999}])
    runner = _runner(client, tmp_path, platform, clock)
    runner.state.queue_result(1, {"state": "succeeded"})
    outcome = runner.run_once()
    assert outcome == {"jobs": 2, "results_sent": 3}
    posts = [path for method, path in client.calls if method == "POST"]
    assert posts == ["/api/v1/agent/jobs/1/result", "/api/v1/agent/jobs/3/result",
                     "/api/v1/agent/jobs/999/result"]  # 999 refused (404) and dropped
    assert runner.state.pending_results() == []
    corrupt = tmp_path / "state" / "outbox" / "00000000000000000001-5.json"
    corrupt.write_text("{not json")
    assert runner.state.pending_results() == []
    assert corrupt.with_suffix(".bad").exists()


def test_a_revoked_agent_leaves_the_loop(tmp_path: Path, platform: SimulatedPlatform) -> None:
    class Revoked(FakeClient):
        def request(self, method: str, path: str, body: Any = None,
                    headers: dict[str, str] | None = None) -> Any:
            raise RequestRefused(403, "agent revoked: re-enroll with a new token")

    clock = Clock()
    runner = _runner(Revoked(), tmp_path, platform, clock)
    with pytest.raises(AgentRevoked, match="revoked"):
        runner.run_forever()


def test_a_bad_simulated_inventory_is_logged_and_polling_goes_on(
    tmp_path: Path, platform: SimulatedPlatform
) -> None:
    platform.inventory_path.write_text('{"schema_version": 1}')
    with pytest.raises(InventoryFileError, match="hostname: Field required"):
        platform.collect_inventory()
    clock = Clock()
    client = FakeClient()
    runner = _runner(client, tmp_path, platform, clock, jitter=0.0)
    runner.run_forever(stop=lambda: len(clock.waits) >= 3)
    assert all(path.endswith("/jobs") for _method, path in client.calls)


def test_simulated_platform_saves_atomically(platform: SimulatedPlatform) -> None:
    doc = platform.load_inventory()
    doc["programs"] = doc["programs"][:1]
    platform.save_inventory(doc)
    assert len(platform.collect_inventory()["programs"]) == 1
    assert platform.hostname() == "WS-SIM"
    assert not list(platform.inventory_path.parent.glob("*.tmp"))


@pytest.mark.parametrize("value", [
    "AB" * 32, ("ab:" * 32)[:-1], "SHA256:" + ("AB:" * 32)[:-1], " ".join(["ab"] * 32)])
def test_fingerprint_spellings(value: str) -> None:
    assert normalize_fingerprint(value) == ("AB:" * 32)[:-1]
