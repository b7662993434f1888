"""`patchflow scan` (the Prefect scan flow) and `patchflow missing` (its results)."""

from __future__ import annotations

import json
import os

import typer

from cli.common import console, db_session, print_csv, print_json, print_table, split_csv
from patchflow.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("scan")(scan)
    app.command("missing")(missing)


def scan(
    endpoints: str = typer.Option(None, "--endpoints", help="H1,H2,..."),
    group: str = typer.Option(None, "--group", help="A group (with its subgroups)"),
    policy: str = typer.Option(None, "--policy", help="Endpoints under this policy"),
    all_: bool = typer.Option(False, "--all", help="Every endpoint"),
    stop: bool = typer.Option(False, "--stop", help="Stop the running scan(s)"),
    full: bool = typer.Option(False, "--full", help="Evaluate every endpoint, even those "
                              "whose inventory, patch server and products did not change"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Scan endpoints for missing patches (runs the Prefect scan flow). Endpoints nothing
    changed for since their last scan keep their results unless --full is given."""
    if stop:
        from patchflow.ops import stopping

        with db_session() as session:
            count, flow_runs = stopping.stop_scans(session)
        stopping.cancel_elsewhere(flow_runs)
        if as_json:
            print_json({"stop_requested": count})
        else:
            console.print(f"stop requested for {count} running scan(s)")
        return
    from patchflow.scanning.service import Selection, select_endpoints

    selection = Selection(split_csv(endpoints), group, policy, all_)
    if not any([endpoints, group, policy, all_]):
        selection.all = True
    with db_session() as session:
        select_endpoints(session, selection)  # bad input fails here, before Prefect starts
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from flows.scan import scan as scan_flow

    with console.status("scanning…"):
        summary = scan_flow({k: v for k, v in vars(selection).items() if v}, full=full)
    if as_json:
        print_json(summary)
        return
    console.print(
        f"scan {summary['scan_id']} {summary['status']}: {summary['scanned']} endpoints scanned "
        f"({summary['unchanged']} unchanged since their last scan), "
        f"{summary['missing_endpoints']} with missing patches, {summary['up_to_date']} up to "
        f"date, {summary['failed']} failed; {summary['pairs']} missing (endpoint, patch) pairs"
    )


MISSING_FIELDS = ["endpoint", "patch_id", "kb", "package_id", "title", "product", "severity",
                  "category", "restart_required", "eula_status", "installed_version",
                  "available_version", "reason", "group", "release_date", "detected_at",
                  "cves", "cvss", "exploited", "kev_due_date", "risk"]


def missing(
    endpoint: str = typer.Option(None, "--endpoint", help="One endpoint's host name"),
    group: str = typer.Option(None, "--group"),
    subgroups: bool = typer.Option(False, "--subgroups", help="Include the group's subgroups"),
    severity: str = typer.Option(None, "--severity", help="Comma-separated severities"),
    category: str = typer.Option(None, "--category", help="Comma-separated categories"),
    restart: str = typer.Option(None, "--restart", help="Required,Not Required,May Require"),
    eula: str = typer.Option(None, "--eula", help="accepted | not-accepted"),
    explain: tuple[str, str] | None = typer.Option(
        None, "--explain", help="HOST PATCH: the full reasoning for one pair"),
    as_json: bool = typer.Option(False, "--json"),
    as_csv: bool = typer.Option(False, "--csv"),
    exploited: bool = typer.Option(False, "--exploited",
                                   help="Only pairs with a CVE exploited in the wild"),
    sort: str = typer.Option(None, "--sort", help="risk: highest risk first"),
    include_declined: bool = typer.Option(False, "--include-declined",
                                          help="Also declined patches (marked declined)"),
) -> None:
    """Missing patches found by the last scans, one row per (endpoint, patch)."""
    if explain:
        _explain(*explain)
        return
    if as_json and as_csv:
        raise UserError("choose one of --json and --csv")
    from patchflow.catalog.vuln_query import load_rated_missing
    from patchflow.scanning.missing_query import MissingFilters

    if sort not in (None, "risk"):
        raise UserError(f"--sort {sort!r}: only 'risk' is supported")
    filters = MissingFilters(
        endpoint=endpoint, group=group, subgroups=subgroups,
        severity=tuple(split_csv(severity) or ()),
        category=tuple(split_csv(category) or ()),
        restart=tuple(split_csv(restart) or ()), eula=eula, exploited=exploited)
    with db_session() as session:
        frame = load_rated_missing(session, filters, include_declined=include_declined)
    if sort == "risk":
        frame = frame.sort_values("risk", ascending=False, kind="stable")
    fields = [*MISSING_FIELDS, "declined"] if include_declined else MISSING_FIELDS
    rows = json.loads(frame.reindex(columns=fields).to_json(orient="records",
                                                            date_format="iso"))
    if as_json:
        print_json(rows)
    elif as_csv:
        print_csv(rows, fields)
    else:
        print_table(f"{len(rows)} missing", ["Endpoint", "Patch", "Severity", "Installed",
                                             "Available", "Reason"],
                    [[r["endpoint"], r["kb"] or r["title"], r["severity"],
                      r["installed_version"], r["available_version"], r["reason"]]
                     for r in rows])


def _explain(host: str, patch_ref: str) -> None:
    from patchflow.scanning.service import explain_pair

    with db_session() as session:
        lines = explain_pair(session, host, patch_ref)
    for line in lines:
        console.print(line, highlight=False, markup=False)
