"""The job side of the agent API. It returns no jobs until the install engine installs its own
handlers here (`JOB_HANDLERS.poll = ...`, `JOB_HANDLERS.result = ...`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from patchflow.errors import NotFoundError


def _no_jobs(endpoint_id: int) -> list[dict[str, Any]]:
    return []


def _unknown_job(endpoint_id: int, job_id: int, result: dict[str, Any]) -> None:
    raise NotFoundError(f"no job {job_id} for this agent")


@dataclass
class JobHandlers:
    """What the agent API calls for job polling and results. The install engine assigns its own
    functions here; each opens its own session and raises NotFoundError for a job that is not
    this endpoint's."""

    poll: Callable[[int], list[dict[str, Any]]] = _no_jobs
    result: Callable[[int, int, dict[str, Any]], None] = _unknown_job


JOB_HANDLERS = JobHandlers()


def poll_jobs(endpoint_id: int) -> list[dict[str, Any]]:
    return JOB_HANDLERS.poll(endpoint_id)


def record_job_result(endpoint_id: int, job_id: int, result: dict[str, Any]) -> None:
    JOB_HANDLERS.result(endpoint_id, job_id, result)
