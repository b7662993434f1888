"""The Windows platform: inventory from the registry and Windows tools."""

from __future__ import annotations

from typing import Any

from agent.platforms.base import JobNotSupported
from agent.platforms.windows.collector import WindowsCollector
from agent.platforms.windows.readers import (
    CommandRunner,
    RegistryReader,
    SubprocessRunner,
    WinregReader,
)


class WindowsPlatform:
    name = "windows"

    def __init__(self, registry: RegistryReader | None = None,
                 runner: CommandRunner | None = None) -> None:
        self.collector = WindowsCollector(registry or WinregReader(), runner or SubprocessRunner())

    def hostname(self) -> str:
        return self.collector.hostname()

    def collect_inventory(self) -> dict[str, Any]:
        return self.collector.collect()

    def run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        raise JobNotSupported("this agent does not run install jobs yet")


__all__ = ["WindowsCollector", "WindowsPlatform"]
