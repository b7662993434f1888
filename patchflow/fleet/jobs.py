"""The job side of the agent API: what `GET /api/v1/agent/jobs` and
`POST /api/v1/agent/jobs/{id}/result` call. By default the install engine
(patchflow.install.agent_jobs): a job, to an agent, is one install job item. Tests may swap the
handlers (`JOB_HANDLERS.poll = ...`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.db import get_engine
from patchflow.fleet.agent_cache import agents_of, work_of
from patchflow.fleet.transactions import db_slot


def _install_poll(endpoint_id: int) -> list[dict[str, Any]]:
    # Imported on first use: patchflow.install imports patchflow.fleet.
    from patchflow.install.agent_jobs import poll

    return poll(endpoint_id)


def _install_result(endpoint_id: int, job_id: int, result: dict[str, Any]) -> None:
    from patchflow.install.agent_jobs import record_result

    record_result(endpoint_id, job_id, result)


@dataclass
class JobHandlers:
    """What the agent API calls for job polling and results. Each opens its own session and
    raises NotFoundError for a job that is not this endpoint's."""

    poll: Callable[[int], list[dict[str, Any]]] = _install_poll
    result: Callable[[int, int, dict[str, Any]], None] = _install_result


JOB_HANDLERS = JobHandlers()


def poll_jobs(endpoint_id: int) -> list[dict[str, Any]]:
    return JOB_HANDLERS.poll(endpoint_id)


def known_idle(url: str, endpoint_id: int) -> bool:
    """True when polling would certainly find nothing, known without a query: the install
    engine's work index is fresh and lists no work for the endpoint. Always False while a test
    has swapped the poll handler."""
    if not _install_polls():
        return False
    from patchflow.install.agent_jobs import known_idle as install_known_idle

    return install_known_idle(url, endpoint_id)


def refresh_caches(url: str, ahead: float = 0.0) -> None:
    """Read what the agent hot path answers from (the credentials generation, and the work
    index unless a test swapped the poll handler) again if due within `ahead` seconds: a
    server keeps them fresh this way under load (server.agent_fast_path), so that no burst of
    requests finds them expired and goes the slow way."""
    engine = get_engine(url)
    with db_slot(url):
        agents_of(engine).confirm(engine, ahead)
    if _install_polls():
        from patchflow.install.agent_jobs import endpoints_with_work

        work_of(engine).refresh(lambda: endpoints_with_work(url), ahead)


def caches_due(url: str, ahead: float = 0.0) -> bool:
    """Whether `refresh_caches(url, ahead)` has anything to read; never queries."""
    engine = get_engine(url)
    return agents_of(engine).due(ahead) or (_install_polls() and work_of(engine).due(ahead))


def _install_polls() -> bool:
    """Whether polls go to the install engine (whose work index the caches hold), not to a
    handler a test swapped in."""
    return JOB_HANDLERS.poll is _install_poll


def record_job_result(endpoint_id: int, job_id: int, result: dict[str, Any]) -> None:
    JOB_HANDLERS.result(endpoint_id, job_id, result)
