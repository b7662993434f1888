"""The install side of the fault suite: the real HTTPS server on loopback (tests/fixtures/agent),
the sample catalog synced, its installers served by a loopback vendor, and simulated endpoints
(tests/fixtures/install) that miss Notepad++."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.fixtures.agent.harness import Api
from tests.fixtures.install.agents import SimAgent, inventory, program, synced_server

PATCH = "Notepad++.Notepad++"
OPEN = ("pending", "dispatched", "downloading", "installing")


@contextmanager
def install_server(backend: str, folder: Path) -> Iterator[Api]:
    with synced_server(backend, folder, {"install": {
            "poll_seconds": 0.1, "retry_delay_s": 0, "item_timeout_s": 60}}) as api:
        yield api


def endpoint(api: Api, folder: Path, host: str, cli: Any) -> SimAgent:
    """An enrolled endpoint missing Notepad++ (its agent not started), scanned."""
    agent = SimAgent(api, folder / host, inventory(host, 6000, ["KB5900110", "KB5900150"], [
        program("Notepad++ (64-bit x64)", "8.6.9", "Notepad++ Team")]))
    agent.runner.upload_inventory()
    assert cli("scan", "--endpoints", host).code == 0
    return agent


def ran(agent: SimAgent) -> list[dict[str, Any]]:
    """The installer runs the simulated machine recorded."""
    return list(agent.doc.get("simulate", {}).get("ran", []))

