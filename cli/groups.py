"""`patchflow groups`: endpoint groups (they nest), a thin wrapper over patchflow.fleet."""

from __future__ import annotations

import typer

from cli.common import console, db_session, plain, print_json, print_table

groups_app = typer.Typer(help="Endpoint groups (they nest).")


def register(app: typer.Typer) -> None:
    app.add_typer(groups_app, name="groups")


@groups_app.command("add")
def groups_add(
    name: str,
    parent: str = typer.Option(None, "--parent", help="Make it a subgroup of this group"),
) -> None:
    """Add a group."""
    from patchflow import fleet

    with db_session() as session:
        fleet.add_group(session, name, parent)
    console.print(f"added group {plain(name)}" + (f" under {plain(parent)}" if parent else ""))


@groups_app.command("list")
def groups_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List groups as a tree, with their own and inherited policy."""
    from patchflow import fleet

    with db_session() as session:
        rows = fleet.list_groups(session)
    if as_json:
        print_json(rows)
        return
    print_table(
        "Groups", ["Group", "Policy", "Effective policy", "Endpoints"],
        [["  " * (r["path"].count("/")) + r["name"], r["policy"], r["effective_policy"],
          r["endpoints"]] for r in rows],
    )
