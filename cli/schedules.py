"""`patchflow report schedule`: when `patchflow serve` builds the reports by itself.

`patchflow report` (cli/reports.py) builds reports now. To give it a `schedule` subcommand
without touching that module, `report` is re-registered here as a group whose callback is the
same function and runs only when no subcommand is named: `patchflow report --kind missing`
behaves exactly as before, `patchflow report schedule ...` edits the schedule.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from cli.common import console, db_session, print_json
from patchflow.errors import UserError

deployments_app = typer.Typer(
    help="The Prefect deployments generated from the schedules stored in the database.")


def register(app: typer.Typer) -> None:
    app.add_typer(deployments_app, name="deployments")
    original = next((c for c in app.registered_commands if c.name == "report"), None)
    report_app = typer.Typer(invoke_without_command=True, no_args_is_help=False,
                             help="Build reports now, or schedule them (`report schedule`).")
    if original is not None and original.callback is not None:
        app.registered_commands.remove(original)
        report_app.callback(invoke_without_command=True)(_unless_subcommand(original.callback))
    report_app.command("schedule")(schedule)
    app.add_typer(report_app, name="report")


def _unless_subcommand(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` with a leading typer.Context parameter; it runs only when the group is called
    without a subcommand (click calls a group's callback before its subcommand)."""

    @functools.wraps(command)
    def callback(ctx: typer.Context, **kwargs: Any) -> Any:
        if ctx.invoked_subcommand is None:
            return command(**kwargs)
        return None

    signature = inspect.signature(command)
    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                annotation=typer.Context)
    callback.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[context, *signature.parameters.values()])
    callback.__annotations__ = {**command.__annotations__, "ctx": typer.Context}
    return callback


def schedule(
    weekday: str = typer.Option(None, "--weekday", help="monday ... sunday"),
    at: str = typer.Option(None, "--at", help="HH:MM (24-hour, in [schedule] timezone)"),
    kind: str = typer.Option(None, "--kind", help="missing | installed | patches | compliance "
                             "| all (comma-separated for several; default all)"),
    email: str = typer.Option(None, "--email", help="Also mail the reports to a@b,c@d"),
    clear: bool = typer.Option(False, "--clear", help="Remove the report schedule"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Show or set the weekly report schedule; `patchflow serve` applies a change within
    seconds (deployment `patchflow-report/reports@<instance>`)."""
    from patchflow.reporting import report_schedule

    if clear and (weekday or at or kind or email):
        raise UserError("--clear cannot be combined with --weekday, --at, --kind or --email")
    with db_session() as session:
        if clear:
            had = report_schedule.clear(session)
            console.print("report schedule removed" if had else "no report schedule was set")
            return
        if weekday or at or kind or email:
            current = report_schedule.load(session)
            if not (weekday or current) or not (at or current):
                raise UserError("a report schedule needs --weekday and --at")
            recipients = None
            if email is not None:
                from patchflow.reporting import mail

                recipients = mail.parse_addresses(email)
                if recipients and mail.load_settings(session, decrypt=False) is None:
                    raise UserError("SMTP is not configured: run `patchflow mail set` first")
            saved = report_schedule.save(
                session,
                weekday or (current.weekday if current else ""),
                at or (current.at if current else ""),
                kind if kind is not None else (",".join(current.kinds) if current else None),
                recipients if recipients is not None else (current.email if current else []),
            )
        else:
            saved = report_schedule.load(session)
    if as_json:
        print_json(saved.to_dict() if saved else None)
        return
    if saved is None:
        console.print("no report schedule (set one with --weekday and --at)")
        return
    line = f"reports ({', '.join(saved.kinds)}) every {saved.weekday} at {saved.at}"
    if saved.email:
        line += f", mailed to {', '.join(saved.email)}"
    console.print(line, highlight=False)



@deployments_app.command("list")
def deployments_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """What `patchflow serve` serves: one deployment per schedule, with the next run."""
    import datetime as dt
    import zoneinfo

    from deployments.build import build_specs, schedule_timezone
    from deployments.schedules import next_due

    timezone = schedule_timezone()
    now = dt.datetime.now(dt.UTC)
    with db_session() as session:
        specs = build_specs(session, timezone)
    rows = [{"deployment": s.full_name, "parameters": s.parameters,
             "schedule": s.description,
             "next_run": (lambda n: n.isoformat() if n else None)(
                 next_due(s.rrule, now, zoneinfo.ZoneInfo(timezone)))} for s in specs]
    if as_json:
        print_json(rows)
        return
    from cli.common import print_table

    print_table(f"Deployments ({timezone})", ["Deployment", "Schedule", "Next run"],
                [[r["deployment"], r["schedule"], (r["next_run"] or "")[:16].replace("T", " ")]
                 for r in rows])


@deployments_app.command("export")
def deployments_export(
    work_pool: str = typer.Option(..., "--work-pool", help="Work pool the workers poll"),
    work_queue: str = typer.Option(None, "--work-queue", help="Work queue in that pool"),
    source_dir: str = typer.Option(
        None, "--source-dir",
        help="Where the patchflow source tree is on the worker machines (default: here)"),
    out: Path = typer.Option(None, "--out", help="Write to this file (default: stdout)"),
) -> None:
    """Write a prefect.yaml with the stored schedules, for `prefect deploy --all` on a Prefect
    server with work pools and workers (instead of `patchflow serve`)."""
    import sys

    from deployments.build import build_specs, prefect_yaml

    with db_session() as session:
        specs = build_specs(session)
    text = prefect_yaml(specs, work_pool, source_dir or str(Path(__file__).resolve().parents[1]),
                        work_queue)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    console.print(f"wrote {len(specs)} deployment(s) to {out}", highlight=False)
