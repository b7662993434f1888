"""The `patchflow-report` flow: load → build → write → (mail) → publish artifacts → record the run.

One task per step, each over whole frames: the flow has six task runs whether the fleet has ten
endpoints or fifty thousand. A mail failure does not lose the report: the files stay written,
the run is recorded with the reason, and the flow's result says what happened.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from deployments.orphans import record_process
from patchflow.reporting import service as reporting
from patchflow.scanning.missing_query import MissingFilters
from tasks import report as t


@flow(name="patchflow-report", log_prints=False, on_running=[record_process])
def report_flow(
    kinds: list[str] | None = None,
    filters: dict[str, Any] | None = None,
    formats: list[str] | None = None,
    out_dir: str | None = None,
    email: list[str] | None = None,
    created_by: str | None = None,
    page_rows: int = reporting.DEFAULT_PAGE_ROWS,
    heading: str | None = None,
    intro: list[str] | None = None,
) -> dict[str, Any]:
    """Build the reports of `kinds` for `filters` (MissingFilters.to_json()) into `out_dir`
    (default PATCHFLOW_HOME/reports/<timestamp>) and optionally mail them, under `heading`
    and `intro` when a workflow sends them (the patch cycle's outcome)."""
    logger = get_run_logger()
    generated_at = dt.datetime.now(dt.UTC)
    kinds = reporting.parse_kinds(kinds)
    run_kind = reporting.run_kind(kinds)
    formats = reporting.parse_formats(formats)
    selection = MissingFilters.from_json(filters or {})
    recipients = email or []
    run_dir: Path | None = None
    filters_json = selection.to_json()
    try:
        run_dir = reporting.output_dir(out_dir, generated_at)
        frames = t.load_frames_task(filters_json, kinds)
        reports = t.build_reports_task(frames, kinds)
        csv_names = {f"{table.name}.csv" for r in reports for table in r.tables} \
            if "csv" in formats else set()
        opts = reporting.html_options(generated_at, selection, page_rows, csv_names)
        if heading:
            opts = replace(opts, heading=heading, intro=tuple(intro or ()))
        files = t.write_files_task(reports, str(run_dir), formats, opts)
        mailed: dict[str, Any] | None = None
        mail_error: str | None = None
        if recipients:
            mailed = t.email_task(reports, str(run_dir), files, recipients, opts)
            mail_error = mailed["error"]
        artifacts = t.publish_task(reports, str(run_dir), files, opts, mailed)
        message = f"e-mail not sent: {mail_error}" if mail_error else None
        run_id = t.record_task(run_kind, str(run_dir), filters_json, "done", message,
                               created_by, generated_at)
    except Exception as exc:
        t.record_task(run_kind, str(run_dir) if run_dir else None, filters_json, "failed",
                      (str(exc).splitlines() or [type(exc).__name__])[0], created_by,
                      generated_at)
        raise
    logger.info("reports written to %s", run_dir)
    return {
        "run_id": run_id,
        "flow_run_id": str(flow_run.id) if flow_run.id else None,
        "path": str(run_dir),
        "kinds": kinds,
        "files": [{"name": name, "rows": rows} for name, rows in files],
        "headline": {r.kind: dict(r.headline) for r in reports},
        "email": mailed if mailed and not mail_error else None,
        "email_error": mail_error,
        "artifacts": artifacts,
    }
