"""What the agent needs from a platform: who am I, what is installed, install a verified file,
uninstall, restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class JobNotSupported(Exception):
    """The platform cannot run this kind of job; the agent reports it as failed."""


class Platform(Protocol):
    name: str

    def hostname(self) -> str:
        """The host name to enroll with."""

    def collect_inventory(self) -> dict[str, Any]:
        """An inventory document in the contract schema (agent/schema.py)."""

    def install(self, job: dict[str, Any], path: Path | None) -> tuple[int, str]:
        """Install silently; (exit code, output worth reporting). `path` is the downloaded,
        already verified file (None for a Windows Update Agent install by KB)."""

    def uninstall(self, job: dict[str, Any], command: list[str]) -> tuple[int, str]:
        """Run a rollback's silent uninstall `command` (agent/uninstall.py built it from the
        job's spec); (exit code, output worth reporting)."""

    def restart(self) -> None:
        """Restart the machine to complete installs (only called when the job allows it)."""
