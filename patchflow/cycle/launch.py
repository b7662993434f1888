"""Starting a cycle run in its own process: `patchflow cycle run POLICY` without --wait, and the
console's Start run.

The run outlives whoever asked for it (a terminal closed, the server restarted): a detached
`patchflow cycle run POLICY --wait --run-id N` runs the flow, logging to
PATCHFLOW_HOME/logs/cycle-run-N.log, and the run's record says how it goes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from patchflow import config


def log_path(run_id: int) -> Path:
    return config.home() / "logs" / f"cycle-run-{int(run_id)}.log"


def spawn(run_id: int, policy: str, dry_run: bool = False) -> int:
    """Run the Pending cycle run `run_id` of `policy` in a new session; its process id."""
    path = log_path(run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "cycle", "run", policy, "--wait",
             "--run-id", str(int(run_id)), *(["--dry-run"] if dry_run else [])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=dict(os.environ))
    return process.pid
