"""Test hook: named crash points for the fault tests (tests/faults/). Does nothing unless the
environment variable PATCHFLOW_FAULT_POINT is set.

A SIGKILL at a random moment proves little and flakes; a SIGKILL at a named moment ("after the
document is written, before its commit") is deterministic and cheap. The code calls `point(NAME)`
at a few such moments; when PATCHFLOW_FAULT_POINT equals NAME (or `NAME@N`: the Nth time the
process reaches it) the process kills itself with SIGKILL on the spot: no cleanup, no `finally`,
no commit, exactly as a power cut or an OOM kill would leave things.

Points: `sync.before_commit` (a parsed document written, not committed), `scan.batch_write`
(a scan batch's results written, not committed), `install.after_dispatch` (an install item
committed as offered to its agent), `agent.installing` (the simulated installer running),
`backup.mid_write` (some tables in the `.part` archive), `restore.mid_tables` (some tables
inserted, not committed), `restore.mid_content` (a content file opened, not yet written).
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
