"""`patchflow report`, `patchflow dashboard` and `patchflow mail ...`.

Input is checked before Prefect starts (its temporary server costs ~10 s), so a misspelt
severity or an unwritable --out fails at once with one line. `dashboard` never imports Prefect:
it is two GROUP BY queries and a little pandas, meant to answer in well under a second.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path

import typer

from cli.common import console, db_session, plain, print_json, print_table, split_csv
from patchflow.errors import UserError

mail_app = typer.Typer(help="E-mail delivery of reports (SMTP settings, test message).")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("dashboard")(dashboard)
    app.add_typer(mail_app, name="mail")


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def report(
    kind: str = typer.Option("all", "--kind", help="missing | installed | patches | compliance "
                             "| all (comma-separated for several)"),
    endpoint: str = typer.Option(None, "--endpoint", help="One endpoint's host name"),
    group: str = typer.Option(None, "--group", help="Only endpoints in this group"),
    subgroups: bool = typer.Option(False, "--subgroups", help="Include the group's subgroups"),
    severity: str = typer.Option(None, "--severity", help="Comma-separated, e.g. Critical,Low"),
    category: str = typer.Option(None, "--category", help='Comma-separated categories'),
    restart: str = typer.Option(None, "--restart", help="Required,Not Required,May Require"),
    eula: str = typer.Option(None, "--eula", help="accepted | not-accepted"),
    since: str = typer.Option(None, "--since", help="From this day (YYYY-MM-DD, UTC)"),
    until: str = typer.Option(None, "--until", help="Up to and including this day"),
    formats: str = typer.Option("html,csv", "--format", help="html, csv or html,csv"),
    out: str = typer.Option(None, "--out", help="Folder (default PATCHFLOW_HOME/reports/<time>)"),
    email: str = typer.Option(None, "--email", help="Mail the reports to a@b,c@d"),
    page_rows: int = typer.Option(1000, "--page-rows", help="Rows per HTML page", min=50,
                                  max=100_000),
    as_json: bool = typer.Option(False, "--json", help="Print the run summary as JSON"),
) -> None:
    """Build reports (HTML and CSV) through the Prefect `report` flow, optionally mail them."""
    from patchflow.reporting import mail
    from patchflow.reporting.service import preflight
    from patchflow.scanning.missing_query import MissingFilters

    filters = MissingFilters(
        endpoint=endpoint, group=group, subgroups=subgroups,
        severity=tuple(split_csv(severity) or ()), category=tuple(split_csv(category) or ()),
        restart=tuple(split_csv(restart) or ()), eula=eula, since=since, until=until,
    )
    recipients = mail.parse_addresses(email)
    with db_session() as session:
        if recipients and mail.load_settings(session, decrypt=False) is None:
            raise UserError("SMTP is not configured: run `patchflow mail set` first")
        request = preflight(session, kind, formats, filters, out, page_rows)

    from flows.report import report_flow

    result = report_flow(
        kinds=request.kinds,
        filters=request.filters.to_json(),
        formats=request.formats,
        out_dir=str(request.run_dir),
        email=recipients or None,
        created_by=_user(),
        page_rows=page_rows,
    )
    if as_json:
        print_json(result)
    else:
        console.print(f"reports written to {result['path']}", highlight=False)
        print_table(None, ["File", "Rows"],
                    [[f["name"], "" if f["rows"] is None else f"{f['rows']:,}"]
                     for f in result["files"]])
        if result["email"]:
            console.print(f"mailed to {plain(', '.join(result['email']['recipients']))}")
    if result["email_error"]:
        raise UserError(f"reports written to {result['path']}, but the e-mail was not sent: "
                        f"{result['email_error']}")


def dashboard(
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
    html: str = typer.Option(None, "--html", help="Also write the dashboard page to this file"),
) -> None:
    """Missing patches by severity and the scan overview (fast: SQL aggregates only)."""
    from patchflow import config
    from patchflow.reporting.report_data import load_dashboard

    with db_session() as session:
        data = load_dashboard(session)
    if html:
        from reports.html import render_dashboard

        path = Path(html).expanduser()
        console_url = config.setting("console", "url")
        try:
            path.write_text(render_dashboard(data, console_url), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    if as_json:
        print_json(data)
        return
    print_table(
        f"Missing patches by severity ({data['generated_at']})",
        ["Severity", "Patches", "Missing (endpoint, patch)"],
        [[s, f"{c['patches']:,}", f"{c['pairs']:,}"]
         for s, c in data["missing_by_severity"].items()],
    )
    over = data["scan_overview"]
    print_table(
        f"Patch scan overview ({data['endpoints']:,} endpoints)",
        ["Missing Patches", "Not Scanned", "Up-to-Date"],
        [[f"{over['missing_patches']:,}", f"{over['not_scanned']:,}", f"{over['up_to_date']:,}"]],
    )
    if html:
        console.print(f"dashboard page written to {html}", highlight=False)


@mail_app.command("set")
def mail_set(
    host: str = typer.Option(None, "--host", help="SMTP relay host"),
    port: int = typer.Option(None, "--port", help="Default 587 (starttls), 465 (ssl), 25"),
    security: str = typer.Option(None, "--security", help="starttls | ssl | none"),
    user: str = typer.Option(
        None, "--user", help='Login; password from PATCHFLOW_SMTP_PASSWORD or a prompt; "" clears'
    ),
    sender: str = typer.Option(None, "--sender", help="From address"),
    ca_file: str = typer.Option(None, "--ca-file", help="Extra CA bundle (PEM) to trust"),
    timeout: float = typer.Option(None, "--timeout", help="Seconds (default 30)"),
    max_attachment_mb: float = typer.Option(
        None, "--max-attachment-mb", help="Attach CSVs up to this total (default 10)"
    ),
) -> None:
    """Store the SMTP settings (the password encrypted) in the patch database."""
    from patchflow.reporting import mail

    password = None
    if user:
        password = os.environ.get("PATCHFLOW_SMTP_PASSWORD")
        if password is None:
            password = typer.prompt(f"SMTP password for {user}", hide_input=True)
    elif user == "":
        password = ""
    with db_session() as session:
        settings = mail.save_settings(
            session, host=host, port=port, security=security, user=user, password=password,
            sender=sender, ca_file=ca_file, timeout=timeout, max_attachment_mb=max_attachment_mb,
        )
        shown = settings.public()
    _show(shown)


def _show(shown: dict[str, object]) -> None:
    for key, value in shown.items():
        console.print(f"{key}: {plain(value)}", highlight=False)


@mail_app.command("show")
def mail_show(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """Show the SMTP settings (never the password)."""
    from patchflow.reporting import mail

    with db_session() as session:
        settings = mail.load_settings(session, decrypt=False)
    if settings is None:
        raise UserError("SMTP is not configured: run `patchflow mail set --host H --sender A`")
    if as_json:
        print_json(settings.public())
    else:
        _show(settings.public())


@mail_app.command("test")
def mail_test(to: str = typer.Option(..., "--to", help="Recipient(s), comma-separated")) -> None:
    """Send a short test message through the configured relay."""
    from patchflow.reporting import mail

    recipients = mail.parse_addresses(to)
    if not recipients:
        raise UserError("--to needs at least one address")
    with db_session() as session:
        settings = mail.load_settings(session)
    if settings is None:
        raise UserError("SMTP is not configured: run `patchflow mail set --host H --sender A`")
    message = mail.build_message(
        settings.sender, recipients, "patchflow test message",
        "<p>This is a test message from <strong>patchflow</strong>: report e-mail works.</p>",
        "This is a test message from patchflow: report e-mail works.\n",
    )
    mail.send_message(settings, message)
    console.print(f"test message sent to {', '.join(recipients)} via "
                  f"{settings.host}:{settings.port}", highlight=False)
