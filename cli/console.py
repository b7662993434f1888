"""`patchflow admin add|passwd|list|remove`: the web console's administrators.

These join the `admin` group that `admin token` lives in (cli/admin.py). A password comes
from a hidden prompt (asked twice) or, for scripts, from the first line of standard input with
`--password-stdin`; it is never an argument, which would leave it in shell history and `ps`.
"""

from __future__ import annotations

import sys

import typer

from cli.common import console, db_session, print_json, print_table
from patchflow.errors import UserError
from patchflow.ops import audit


def register(app: typer.Typer) -> None:
    from cli.admin import admin_app

    admin_app.command("add")(admin_add)
    admin_app.command("passwd")(admin_passwd)
    admin_app.command("list")(admin_list)
    admin_app.command("remove")(admin_remove)


PASSWORD_STDIN = typer.Option(False, "--password-stdin",
                              help="Read the password from the first line of standard input")


def _password(username: str, from_stdin: bool) -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise UserError("--password-stdin: standard input is empty")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise UserError("no terminal to ask for the password: use --password-stdin")
    password: str = typer.prompt(f"Password for {username}", hide_input=True,
                                 confirmation_prompt=True)
    return password


def admin_add(
    username: str = typer.Argument(..., help="The console login name"),
    password_stdin: bool = PASSWORD_STDIN,
) -> None:
    """Add a web console administrator (the password is stored as a slow salted hash)."""
    from patchflow.ops import accounts

    accounts.validate_username(username)
    password = _password(username, password_stdin)
    with db_session() as session:
        accounts.add_admin(session, username, password)
        audit.record(session, audit.cli_actor(), "admin.add", username, source="cli")
    console.print(f"added administrator {username}: log in at https://<server>:<port>/console",
                  highlight=False)


def admin_passwd(
    username: str = typer.Argument(..., help="An existing administrator"),
    password_stdin: bool = PASSWORD_STDIN,
) -> None:
    """Change an administrator's password; every console session of theirs ends."""
    from patchflow.ops import accounts

    with db_session() as session:
        accounts.get_admin(session, username)  # a typo fails before the prompt
    password = _password(username, password_stdin)
    with db_session() as session:
        accounts.set_password(session, username, password)
        audit.record(session, audit.cli_actor(), "admin.password", username, source="cli")
    console.print(f"changed the password of {username}", highlight=False)


def admin_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List the web console's administrators."""
    from patchflow.ops import accounts

    with db_session() as session:
        rows = accounts.list_admins(session)
    if as_json:
        print_json(rows)
    else:
        print_table(None, ["User", "Created"], [[r["username"], r["created_at"]] for r in rows])


def admin_remove(username: str = typer.Argument(..., help="The administrator to remove")) -> None:
    """Remove an administrator; their console sessions end for good (adding the name again
    makes a new account that none of them opens)."""
    from patchflow.ops import accounts

    with db_session() as session:
        accounts.remove_admin(session, username)
        audit.record(session, audit.cli_actor(), "admin.remove", username, source="cli")
    console.print(f"removed administrator {username}", highlight=False)
