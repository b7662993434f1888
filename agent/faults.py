"""Test hook: named crash points for the fault tests (tests/faults/). Does nothing unless the
environment variable PATCHFLOW_FAULT_POINT is set.

Here, in the agent, because the agent is the lower layer: the simulated platform calls it and
may import nothing of the server, while the server's `patchflow.ops.faults` re-exports it, so both
sides share one implementation (the points are listed there).
"""

from __future__ import annotations

import os
import signal

VARIABLE = "PATCHFLOW_FAULT_POINT"
_hits: dict[str, int] = {}


def point(name: str) -> None:
    """Kill this process here if the fault variable names this point (and hit count)."""
    wanted = os.environ.get(VARIABLE)
    if not wanted:
        return
    target, _, nth = wanted.partition("@")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
        os._exit(137)  # Windows has no SIGKILL: end without cleanup all the same
