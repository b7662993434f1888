"""The job side of the agent API: what `GET /api/v1/agent/jobs` and
`POST /api/v1/agent/jobs/{id}/result` call. By default the install engine
(patchflow.install.agent_jobs): a job, to an agent, is one install job item. Tests may swap the
handlers (`JOB_HANDLERS.poll = ...`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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
    if JOB_HANDLERS.poll is not _install_poll:
        return False
    from patchflow.install.agent_jobs import known_idle as install_known_idle

    return install_known_idle(url, endpoint_id)


def record_job_result(endpoint_id: int, job_id: int, result: dict[str, Any]) -> None:
    JOB_HANDLERS.result(endpoint_id, job_id, result)
