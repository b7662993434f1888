"""Starting the install flow for a job without waiting for it (`install start` without
`--wait`, and the admin API): a detached process runs `patchflow jobs resume JOB`, so the job
outlives the command or request that started it. Its log goes to
PATCHFLOW_HOME/logs/install-job-N.log. With PREFECT_API_URL set the run reports to that Prefect
server; otherwise the process starts Prefect's temporary server, which takes a few seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from patchflow import config


def log_path(job_id: int) -> Path:
    return config.home() / "logs" / f"install-job-{int(job_id)}.log"


def spawn(job_id: int) -> int:
    """Start the flow in a new session (a Ctrl+C in the terminal does not reach it); its pid."""
    path = log_path(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "jobs", "resume", str(int(job_id))],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=dict(os.environ),
        )
    return process.pid


# Replaceable (tests, an embedding application): called with the job id, returns a process id.
LAUNCHER: list[Callable[[int], int]] = [spawn]


def launch(job_id: int) -> int:
    return LAUNCHER[0](job_id)


def resume_unfinished() -> list[int]:
    """Launch a flow for every job left pending or running (its flow died with the server):
    for a start-up hook of `patchflow serve`. Safe if a flow is in fact still running: every
    step moves items with conditional updates, so two flows never both move one item."""
    from patchflow.install.dispatch import unfinished_jobs

    jobs = unfinished_jobs()
    for job_id in jobs:
        launch(job_id)
    return jobs
