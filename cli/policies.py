"""`patchflow policies`: the policies applied to groups, a thin wrapper over patchflow.fleet.
Their maintenance windows (`policies window`) join this group from cli/windows.py."""

from __future__ import annotations

from typing import Any

import typer

from cli.common import console, db_session, plain, print_json, print_table, split_csv
from patchflow.errors import UserError

policies_app = typer.Typer(help="Policies applied to groups.")


def register(app: typer.Typer) -> None:
    app.add_typer(policies_app, name="policies")


PATCH_SERVER = typer.Option(None, "--patch-server", help="Patch server the endpoints use")
GROUPS = typer.Option(None, "--groups", help="Comma-separated groups that get this policy")
ROAMING = typer.Option(None, "--roaming-microsoft/--no-roaming-microsoft",
                       help="Roaming endpoints use Microsoft Update")
WEEKDAY = typer.Option(None, "--scan-weekday", help="monday ... sunday")
SCAN_AT = typer.Option(None, "--scan-at", help="HH:MM (24-hour)")
EVERY = typer.Option(None, "--scan-every-weeks", help="Scan every N weeks (default 1)")
MISSED = typer.Option(None, "--run-if-missed/--no-run-if-missed",
                      help="Run a missed scheduled scan at start-up")
AUTO_INSTALL = typer.Option(None, "--auto-install/--no-auto-install",
                            help="Install missing patches automatically")
AUTO_RESTART = typer.Option(None, "--auto-restart/--no-auto-restart",
                            help="Allow automatic restarts")


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        console.print(f"note: {plain(note)}")


@policies_app.command("add")
def policies_add(
    name: str,
    patch_server: str = PATCH_SERVER,
    groups: str = GROUPS,
    roaming_microsoft: bool = ROAMING,
    scan_weekday: str = WEEKDAY,
    scan_at: str = SCAN_AT,
    scan_every_weeks: int = EVERY,
    run_if_missed: bool = MISSED,
    auto_install: bool = AUTO_INSTALL,
    auto_restart: bool = AUTO_RESTART,
) -> None:
    """Add a policy and apply it to groups."""
    from patchflow import fleet

    opts = fleet.PolicyOptions(
        patch_server=patch_server, groups=split_csv(groups), roaming_microsoft=roaming_microsoft,
        scan_weekday=scan_weekday, scan_at=scan_at, scan_every_weeks=scan_every_weeks,
        run_if_missed=run_if_missed, auto_install=auto_install, auto_restart=auto_restart,
    )
    with db_session() as session:
        _policy, notes = fleet.add_policy(session, name, opts)
    console.print(f"added policy {name}")
    _print_notes(notes)


@policies_app.command("edit")
def policies_edit(
    name: str,
    patch_server: str = PATCH_SERVER,
    groups: str = GROUPS,
    roaming_microsoft: bool = ROAMING,
    scan_weekday: str = WEEKDAY,
    scan_at: str = SCAN_AT,
    scan_every_weeks: int = EVERY,
    clear_schedule: bool = typer.Option(False, "--clear-schedule",
                                        help="Remove the scan schedule"),
    run_if_missed: bool = MISSED,
    auto_install: bool = AUTO_INSTALL,
    auto_restart: bool = AUTO_RESTART,
) -> None:
    """Change a policy (only the options given; --groups replaces the group list)."""
    from patchflow import fleet

    opts = fleet.PolicyOptions(
        patch_server=patch_server, groups=split_csv(groups), roaming_microsoft=roaming_microsoft,
        scan_weekday=scan_weekday, scan_at=scan_at, scan_every_weeks=scan_every_weeks,
        clear_schedule=clear_schedule, run_if_missed=run_if_missed, auto_install=auto_install,
        auto_restart=auto_restart,
    )
    with db_session() as session:
        _policy, notes = fleet.edit_policy(session, name, opts)
    console.print(f"updated policy {name}")
    _print_notes(notes)


@policies_app.command("list")
def policies_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List policies."""
    from patchflow import fleet

    with db_session() as session:
        rows = fleet.list_policies(session)
    if as_json:
        print_json(rows)
        return

    def schedule(row: dict[str, Any]) -> str:
        s = row["scan_schedule"]
        if not s:
            return ""
        every = f" every {s['every_weeks']} weeks" if s["every_weeks"] > 1 else " weekly"
        return f"{s['weekday']} {s['at']}{every}"

    print_table(
        "Policies",
        ["Policy", "Patch server", "Groups", "Roaming → Microsoft", "Scan", "Run if missed",
         "Auto install", "Auto restart"],
        [[r["name"], r["patch_server"], ", ".join(r["groups"]),
          "yes" if r["roaming_microsoft"] else "no", schedule(r),
          "yes" if r["run_if_missed"] else "no", "yes" if r["auto_install"] else "no",
          "yes" if r["auto_restart"] else "no"] for r in rows],
    )


@policies_app.command("delete")
def policies_delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", help="Confirm deletion"),
) -> None:
    """Delete a policy; its groups are left without one (they inherit from their parents)."""
    from patchflow import fleet

    if not yes:
        raise UserError(f"deleting policy {name!r} needs --yes")
    with db_session() as session:
        fleet.delete_policy(session, name)
    console.print(f"deleted policy {name}")
