"""`patchflow audit list [--json]`: the audit log (logins, installs, deletions, settings
changes), newest first, as recorded by the console, the CLI and the API."""

from __future__ import annotations

import typer

from cli.common import db_session, print_json, print_table

audit_app = typer.Typer(help="The audit log: who did what, when.")


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.command("list")
def audit_list(
    limit: int = typer.Option(200, "--limit", help="At most this many events (newest first)"),
    actor: str = typer.Option(None, "--actor", help="Only this actor (e.g. alice, cli:root)"),
    action: str = typer.Option(None, "--action",
                               help="Only this action; 'server.' gives every server.* action"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """List the audit log."""
    from patchflow.ops import audit

    with db_session() as session:
        rows = audit.list_events(session, limit=limit, actor=actor, action=action)
    if as_json:
        print_json(rows)
        return
    print_table(None, ["When", "Who", "Via", "Action", "Target", "Detail"],
                [[r["at"], r["actor"], r["source"], r["action"], r["target"] or "",
                  r["detail"] or ""] for r in rows])
