"""`patchflow server token ...`: replication tokens, which let another patchflow instance
replicate this one's patch servers (the downstream side is `patchflow server add NAME
--upstream https://host:6201 --upstream-token T --upstream-fingerprint FP`)."""

from __future__ import annotations

import sys

import typer

from cli.common import console, db_session, print_json, print_table
from cli.servers import server_app

token_app = typer.Typer(help="Replication tokens for downstream patchflow instances.")


def register(app: typer.Typer) -> None:
    server_app.add_typer(token_app, name="token")


@token_app.command("create")
def create(
    name: str = typer.Option("replica", "--name", help="A label, e.g. the branch's name"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Create a replication token; printed once, stored only as a hash."""
    from patchflow.catalog import replication

    with db_session() as session:
        token = replication.create_token(session, name)
    if as_json:
        print_json({"token": token, "name": name})
        return
    sys.stdout.write(token + "\n")
    print("store it now: it is not shown again. On the downstream: patchflow server add NAME "
          "--upstream https://THIS-HOST:6201 --upstream-token TOKEN --upstream-fingerprint "
          "\"$(patchflow tls fingerprint)\" (run here)", file=sys.stderr)


@token_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """Replication tokens (never the tokens themselves)."""
    from patchflow.catalog import replication

    with db_session() as session:
        rows = replication.list_tokens(session)
    if as_json:
        print_json(rows)
        return
    print_table("Replication tokens", ["Id", "Name", "Created", "Revoked"],
                [[r["id"], r["name"], r["created_at"][:19], "yes" if r["revoked"] else ""]
                 for r in rows])


@token_app.command("revoke")
def revoke(token_id: int) -> None:
    """Revoke a replication token: the next request with it is refused (403)."""
    from patchflow.catalog import replication

    with db_session() as session:
        replication.revoke_token(session, token_id)
    console.print(f"revoked replication token {token_id}")
