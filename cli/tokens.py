"""`patchflow endpoints token`: enrollment tokens, which agents trade for their identity. They
join the `endpoints` group of cli/endpoints.py."""

from __future__ import annotations

import sys

import typer

from cli.common import console, db_session, print_json, print_table

token_app = typer.Typer(help="Enrollment tokens agents trade for their identity.")


def register(app: typer.Typer) -> None:
    from cli.endpoints import endpoints_app

    endpoints_app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    group: str = typer.Option(None, "--group", help="Group enrolled endpoints join"),
    expires: str = typer.Option("7d", "--expires", help="30m, 12h, 7d, 2w or never"),
    uses: int = typer.Option(None, "--uses", help="How many enrollments (default: unlimited)"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Create an enrollment token; it is printed once and stored only as a hash."""
    from patchflow import fleet

    with db_session() as session:
        token, row = fleet.create_enrollment_token(session, group, expires, uses)
        info = fleet.enrollment_token_to_dict(session, row)
    if as_json:
        print_json({"token": token, **info})
        return
    sys.stdout.write(token + "\n")
    limits = [f"expires {info['expires_at'][:19]}Z" if info["expires_at"] else "never expires",
              f"{uses} use(s)" if uses else "unlimited uses"]
    if group:
        limits.append(f"group {group}")
    print(f"enrollment token {info['id']}: {', '.join(limits)}; not shown again",
          file=sys.stderr)


@token_app.command("list")
def token_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List enrollment tokens with their state (never the tokens themselves)."""
    from patchflow import fleet

    with db_session() as session:
        rows = fleet.list_enrollment_tokens(session)
    if as_json:
        print_json(rows)
        return
    print_table(
        "Enrollment tokens", ["Id", "Group", "Created", "Expires", "Uses", "Left", "State"],
        [[r["id"], r["group"], (r["created_at"] or "")[:19], (r["expires_at"] or "never")[:19],
          r["uses"], "unlimited" if r["uses_left"] is None else r["uses_left"], r["state"]]
         for r in rows],
    )


@token_app.command("revoke")
def token_revoke(
    token_id: int = typer.Argument(..., help="Id from `endpoints token list`"),
) -> None:
    """Revoke an enrollment token: agents can no longer enroll with it."""
    from patchflow import fleet

    with db_session() as session:
        fleet.revoke_enrollment_token(session, token_id)
    console.print(f"revoked enrollment token {token_id}")
