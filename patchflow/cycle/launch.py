"""Starting a cycle run in its own process: `patchflow cycle run POLICY` without --wait, and the
console's Start run.

The run outlives whoever asked for it (a terminal closed, the server restarted): a detached
`patchflow cycle run POLICY --wait --run-id N` runs the flow, logging to
PATCHFLOW_HOME/logs/cycle-run-N.log, and the run's record says how it goes.
"""

from __future__ import annotations

from pathlib import Path

from patchflow import config
from patchflow.ops import childproc


def log_path(run_id: int) -> Path:
    return config.home() / "logs" / f"cycle-run-{int(run_id)}.log"


def spawn(run_id: int, policy: str, dry_run: bool = False) -> int:
    """Run the Pending cycle run `run_id` of `policy` in a new session; its process id."""
    return childproc.spawn_cli(
        ["cycle", "run", policy, "--wait", "--run-id", str(int(run_id)),
         *(["--dry-run"] if dry_run else [])], log_path(run_id))
