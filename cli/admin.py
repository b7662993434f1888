"""`patchflow admin`: the group for administrator access, and its `admin token` commands (admin
API tokens, a thin wrapper over patchflow.fleet like the admin API). The web console's
administrators (`admin add|passwd|list|remove`) join this group from cli/console.py."""

from __future__ import annotations

import sys

import typer

from cli.common import console, db_session, print_json, print_table

admin_app = typer.Typer(help="Admin API access.")
admin_token_app = typer.Typer(help="Admin API tokens.")
admin_app.add_typer(admin_token_app, name="token")


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")


@admin_token_app.command("create")
def admin_token_create(
    name: str = typer.Option("admin", "--name", help="A label to tell tokens apart"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Create an admin API token; it is printed once and stored only as a hash."""
    from patchflow import fleet

    with db_session() as session:
        token = fleet.create_admin_token(session, name)
    if as_json:
        print_json({"token": token, "name": name})
        return
    sys.stdout.write(token + "\n")
    print("store it now: it is not shown again", file=sys.stderr)


@admin_token_app.command("list")
def admin_token_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List admin tokens (never the tokens themselves)."""
    from patchflow import fleet

    with db_session() as session:
        rows = fleet.list_admin_tokens(session)
    if as_json:
        print_json(rows)
        return
    print_table("Admin tokens", ["Id", "Name", "Created", "Revoked"],
                [[r["id"], r["name"], r["created_at"][:19], r["revoked"]] for r in rows])


@admin_token_app.command("revoke")
def admin_token_revoke(
    token_id: int = typer.Argument(..., help="Id from `admin token list`"),
) -> None:
    """Revoke an admin token."""
    from patchflow import fleet

    with db_session() as session:
        fleet.revoke_admin_token(session, token_id)
    console.print(f"revoked admin token {token_id}")
