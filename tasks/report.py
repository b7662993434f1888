"""Prefect tasks of the `patchflow-report` flow: load frames, build reports, write, mail,
publish, record.

Thin wrappers over the reporting service (patchflow/reporting/service.py), which holds the logic so
that the CLI's input checks, the benchmark and tests run it without a Prefect server. Each task
opens its own database session and passes whole DataFrames on, never a session or a secret: the SMTP
password is decrypted inside the mail task only. Caching is off: the inputs are large frames
(hashing 400,000 rows would cost more than the work) and the database changes under them. What
is Prefect's own stays here: publishing artifacts and the mail task's quiet retries.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from models.db import session_scope
from patchflow.errors import UserError
from patchflow.reporting import service as reporting
from patchflow.reporting.report_data import record_run
from patchflow.reporting.service import ReportFrames
from patchflow.scanning.missing_query import MissingFilters
from reports.frames import Report
from reports.html import HtmlOptions
from tasks.retry import io_retries


@task(name="load-report-frames", **io_retries(
    "Load the report data (database)."))
def load_frames_task(filters: dict[str, Any], kinds: list[str]) -> ReportFrames:
    frames = reporting.load_frames(MissingFilters.from_json(filters), kinds)
    get_run_logger().info("loaded %s", ", ".join(f"{k} {v:,}" for k, v in frames.counts.items()))
    return frames


@task(name="build-reports", cache_policy=NO_CACHE)
def build_reports_task(frames: ReportFrames, kinds: list[str]) -> list[Report]:
    return reporting.build_reports(frames, kinds)


@task(name="write-report-files", cache_policy=NO_CACHE)
def write_files_task(
    reports: list[Report], run_dir: str, formats: list[str], opts: HtmlOptions
) -> list[tuple[str, int | None]]:
    files = reporting.write_files(reports, Path(run_dir), formats, opts)
    get_run_logger().info("wrote %d files to %s", len(files), run_dir)
    return files


# Waits between mail attempts. Prefect's own task retries would log a traceback per attempt;
# a relay that is down is an operational event, not a bug, so the task retries by itself.
MAIL_RETRY_DELAYS: tuple[float, ...] = (5.0, 30.0)
_PERMANENT = ("rejected the SMTP login", "refused recipients", "does not offer", "answered 5",
              "not configured")


@task(name="email-reports", cache_policy=NO_CACHE, description=(
    "Mail the reports (SMTP). Retries a transient failure itself (after 5 and 30 s) and "
    "returns the error instead of failing: the report files are written either way."))
def email_task(
    reports: list[Report],
    run_dir: str,
    files: list[tuple[str, int | None]],
    recipients: list[str],
    opts: HtmlOptions,
) -> dict[str, Any]:
    """Mail the reports, retrying transient failures. A mail that cannot go out is logged as
    one error line and returned as `error`, not raised: the report files are written either
    way, and a raised error (or a returned Failed state) makes Prefect print a traceback or
    'NoneType: None' under the CLI's own one-line message."""
    logger = get_run_logger()
    for attempt in range(len(MAIL_RETRY_DELAYS) + 1):
        try:
            result = reporting.email_reports(reports, Path(run_dir), files, recipients, opts)
        except UserError as exc:
            transient = not any(p in str(exc) for p in _PERMANENT)
            if transient and attempt < len(MAIL_RETRY_DELAYS):
                delay = MAIL_RETRY_DELAYS[attempt]
                logger.warning("e-mail attempt %d failed: %s; retrying in %.0f s", attempt + 1,
                               exc, delay)
                time.sleep(delay)
                continue
            logger.error("e-mail not sent: %s", exc)
            return {"recipients": recipients, "attached": [], "not_attached": [],
                    "error": str(exc).splitlines()[0]}
        logger.info("mailed to %s (%d attachments)", ", ".join(recipients),
                    len(result["attached"]))
        return {**result, "error": None}
    raise AssertionError("unreachable")


@task(name="publish-report-artifacts", **io_retries(
    "Publish the reports as Prefect artifacts (Prefect API)."))
def publish_task(
    reports: list[Report],
    run_dir: str,
    files: list[tuple[str, int | None]],
    opts: HtmlOptions,
    mailed: dict[str, Any] | None = None,
) -> list[str]:
    """So the reports show next to the run in the Prefect UI: one table artifact per report (its
    first rows) and a summary linking the files."""
    keys = []
    for report in reports:
        table = report.table(report.artifact_table)
        key = f"report-{report.kind}"
        create_table_artifact(
            key=key,
            table=reporting.artifact_rows(table.frame),
            description=f"{report.title}: {table.title.lower()} ({opts.generated}); "
                        f"files in {run_dir}",
        )
        keys.append(key)
    create_markdown_artifact(
        key="report-summary",
        markdown=reporting.summary_markdown(reports, Path(run_dir), files, opts, mailed),
        description=f"patchflow reports {opts.generated}",
    )
    keys.append("report-summary")
    return keys


@task(name="record-report-run", **io_retries(
    "Record the report run (database)."))
def record_task(
    kind: str,
    run_dir: str | None,
    filters: dict[str, Any],
    status: str,
    message: str | None,
    created_by: str | None,
    created_at: dt.datetime,
) -> int:
    with session_scope() as session:
        return record_run(session, kind, run_dir, filters, status, message, created_by,
                          created_at)
