"""Starting the install flow for a job without waiting for it (`install start` without
`--wait`, and the admin API): a detached process runs `patchflow jobs resume JOB`, so the job
outlives the command or request that started it. Its log goes to
PATCHFLOW_HOME/logs/install-job-N.log. With PREFECT_API_URL set the run reports to that Prefect
server; otherwise the process starts Prefect's temporary server, which takes a few seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from patchflow import config
from patchflow.ops import childproc


def log_path(job_id: int) -> Path:
    return config.home() / "logs" / f"install-job-{int(job_id)}.log"


def spawn(job_id: int) -> int:
    """Start the flow in a new session (a Ctrl+C in the terminal does not reach it); its pid."""
    return childproc.spawn_cli(["jobs", "resume", str(int(job_id))], log_path(job_id))


# Replaceable (tests, an embedding application): called with the job id, returns a process id.
LAUNCHER: list[Callable[[int], int]] = [spawn]


def launch(job_id: int) -> int:
    return LAUNCHER[0](job_id)


def resume_unfinished() -> list[int]:
    """Launch a flow for every job left pending or running whose lease is free (its flow died
    with the server): for a start-up hook of `patchflow serve`. A job whose lease a live flow
    still renews (an `install now --wait` in a terminal) is left to that flow; the launched flow
    takes the lease again itself, so a race here still gives one driver."""
    from patchflow.install.dispatch import unfinished_jobs
    from patchflow.install.lease import holder, is_free

    jobs = [j for j in unfinished_jobs() if is_free(*holder(j))]
    for job_id in jobs:
        launch(job_id)
    return jobs
