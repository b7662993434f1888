"""What the agent needs from a platform: who am I, what is installed, and (next) run a job."""

from __future__ import annotations

from typing import Any, Protocol


class JobNotSupported(Exception):
    """The platform cannot run this kind of job; the agent reports it as failed."""


class Platform(Protocol):
    name: str

    def hostname(self) -> str:
        """The host name to enroll with."""

    def collect_inventory(self) -> dict[str, Any]:
        """An inventory document in the contract schema (patchflow.inventory)."""

    def run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """Run one job and return its result (state, exit_code, message)."""
