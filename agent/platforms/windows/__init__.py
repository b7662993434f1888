"""The Windows platform: inventory from the registry and Windows tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.platforms.windows.collector import WindowsCollector
from agent.platforms.windows.installers import ProcessRunner, WindowsInstaller
from agent.platforms.windows.readers import (
    CommandRunner,
    RegistryReader,
    SubprocessRunner,
    WinregReader,
)


class WindowsPlatform:
    name = "windows"

    def __init__(self, registry: RegistryReader | None = None,
                 runner: CommandRunner | None = None,
                 processes: ProcessRunner | None = None) -> None:
        self.collector = WindowsCollector(registry or WinregReader(), runner or SubprocessRunner())
        self.installer = WindowsInstaller(processes)

    def hostname(self) -> str:
        return self.collector.hostname()

    def collect_inventory(self) -> dict[str, Any]:
        return self.collector.collect()

    def install(self, job: dict[str, Any], path: Path | None) -> tuple[int, str]:
        installer = job.get("installer") or {}
        patch = job.get("patch") or {}
        return self.installer.install(str(installer.get("type", "")), path,
                                      installer.get("switches"),
                                      installer.get("kb") or patch.get("kb"))

    def uninstall(self, job: dict[str, Any], command: list[str]) -> tuple[int, str]:
        return self.installer.uninstall(command)

    def restart(self) -> None:
        self.installer.restart()


__all__ = ["WindowsCollector", "WindowsInstaller", "WindowsPlatform"]
