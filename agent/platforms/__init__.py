"""Platforms the agent runs on: `windows` (the real machine) and `simulated` (a JSON file)."""

from __future__ import annotations

from pathlib import Path

from agent.platforms.base import JobNotSupported, Platform

PLATFORMS = ("windows", "simulated")


def get_platform(name: str, inventory: Path | None = None) -> Platform:
    if name == "simulated":
        if inventory is None:
            raise ValueError("--platform simulated needs --inventory FILE")
        from agent.platforms.simulated import SimulatedPlatform

        return SimulatedPlatform(inventory)
    if name == "windows":
        import sys

        if sys.platform != "win32":
            raise ValueError("--platform windows runs on Windows only; use --platform simulated")
        from agent.platforms.windows import WindowsPlatform

        return WindowsPlatform()
    raise ValueError(f"unknown platform {name!r}: use {' or '.join(PLATFORMS)}")


__all__ = ["PLATFORMS", "JobNotSupported", "Platform", "get_platform"]
