"""Prefect tasks of the `patchflow-install` flow: one task per step over the whole job, never
one per endpoint or item, so a job over 50,000 endpoints has as many task runs as one over five.

Each task opens its own sessions (patchflow.install.dispatch) and returns plain outcomes: a
vendor file with the wrong hash, an agent that never reports, an installer that fails are
results for the job's items, not exceptions, so a normal run logs no traceback. Caching is off:
every step reads a database that changes under it.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from sqlalchemy import select

from models import Endpoint, InstallJobItem, Patch
from models.db import session_scope
from patchflow.install import dispatch
from patchflow.install.auto import create_auto_jobs
from tasks.retry import io_retries

ARTIFACT_ROWS = 1000  # a table for reading in the UI; `patchflow jobs show N --json` has all


@task(name="start-install-job", **io_retries(
    "Mark the install job running (database)."))
def start_job(job_id: int, flow_run_id: str | None) -> dict[str, Any]:
    return dispatch.start_job(job_id, flow_run_id)


@task(name="resolve-installers", **io_retries(
    "Pick each item's installer (database)."))
def resolve_installers(job_id: int) -> dict[str, int]:
    outcome = dispatch.resolve_items(job_id)
    get_run_logger().info("installers chosen for %d items, %d not installable",
                          outcome["resolved"], outcome["failed"])
    return outcome


@task(name="ensure-content", **io_retries(
    "Fetch the content the items need (HTTP, content store, database)."))
def ensure_content(job_id: int) -> dict[str, str]:
    """The files to serve, downloaded and verified once each; {sha256: error} for failures."""
    logger = get_run_logger()
    plan = dispatch.content_plan(job_id)
    logger.info("%d file(s) to fetch into the content store", len(plan))
    return dispatch.fetch_content(plan, log=logger.info)


@task(name="dispatch-items", **io_retries(
    "Queue pending items for their agents (database); already dispatched items "
    "keep their deadlines."))
def dispatch_items(job_id: int, content_errors: dict[str, str]) -> dict[str, int]:
    outcome = dispatch.dispatch(job_id, content_errors)
    get_run_logger().info("%d items offered to agents, %d failed before dispatch, %d waiting "
                          "for a maintenance window", outcome["dispatched"], outcome["failed"],
                          outcome.get("waiting", 0))
    return outcome


@task(name="await-results", **io_retries(
    "Wait for the agents' results (database polling)."))
def await_results(job_id: int, retry_delay_s: float, poll_seconds: float) -> dict[str, Any]:
    """Until every item is final: timeouts ("no result from agent") and retries happen here."""
    return dispatch.await_results(job_id, retry_delay_s, poll_seconds,
                                  log=get_run_logger().info)


@task(name="finish-install-job", **io_retries(
    "Close the install job (database)."))
def finish_job(job_id: int) -> dict[str, Any]:
    return dispatch.finish_job(job_id)


def item_frame(job_id: int, limit: int = ARTIFACT_ROWS) -> pd.DataFrame:
    with session_scope() as session:
        rows = session.execute(
            select(Endpoint.hostname, Patch.kb, Patch.ukey, InstallJobItem.state,
                   InstallJobItem.attempts, InstallJobItem.exit_code, InstallJobItem.message,
                   InstallJobItem.finished_at)
            .join(Endpoint, Endpoint.id == InstallJobItem.endpoint_id)
            .join(Patch, Patch.id == InstallJobItem.patch_id)
            .where(InstallJobItem.job_id == job_id)
            .order_by(InstallJobItem.state != "failed", Endpoint.hostname, Patch.id)
            .limit(limit)).all()
    frame = pd.DataFrame(
        [{"endpoint": r.hostname, "patch": r.kb or r.ukey, "state": r.state,
          "attempts": r.attempts, "exit_code": r.exit_code, "message": r.message,
          "finished_at": r.finished_at} for r in rows],
        columns=["endpoint", "patch", "state", "attempts", "exit_code", "message",
                 "finished_at"])
    frame["exit_code"] = frame["exit_code"].astype("Int64")
    frame["finished_at"] = pd.to_datetime(frame["finished_at"], utc=True)
    return frame


@task(name="publish-install-summary", **io_retries(
    "Publish the job's summary as a Prefect artifact (Prefect API)."))
def publish_summary(job_id: int, summary: dict[str, Any]) -> str:
    """A markdown summary and a table of the items (failures first) next to the run."""
    key = f"install-job-{int(job_id)}"
    frame = item_frame(job_id)
    rows = json.loads(frame.to_json(orient="records", date_format="iso"))
    create_table_artifact(key=key, table=rows,
                          description=f"Install job {job_id}: {summary['summary']}")
    create_markdown_artifact(
        key=f"{key}-summary",
        markdown=(f"# Install job {job_id}: {summary['status']}\n\n"
                  f"| succeeded | failed | reboot pending | cancelled | items |\n"
                  f"|---|---|---|---|---|\n"
                  f"| {summary['succeeded']} | {summary['failed']} | "
                  f"{summary['reboot_pending']} | {summary['cancelled']} | {summary['items']} |\n"),
        description=f"Install job {job_id} summary")
    return key


@task(name="create-auto-install-jobs", **io_retries(
    "Create the install jobs of auto-install policies (database)."))
def create_auto_install_jobs(endpoint_ids: list[int]) -> list[int]:
    logger = get_run_logger()
    auto = create_auto_jobs(endpoint_ids)
    for note in auto.notes:
        logger.info(note)
    logger.info("automatic install: %d job(s) created", len(auto.jobs))
    return auto.jobs
