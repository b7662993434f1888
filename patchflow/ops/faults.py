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

The hook itself lives in the agent (agent/faults.py), the lower layer: the agent may import
nothing of the server, the server imports the agent's contract modules already.
"""

from __future__ import annotations

from agent.faults import VARIABLE, point  # one implementation, shared with the agent

__all__ = ["VARIABLE", "point"]
