"""`patchflow policies window add|list|delete`: a policy's maintenance windows
(patchflow/cycle/window_store.py). Install items for the policy's endpoints are handed to the
agents, and restarts allowed, only inside one; a policy without windows is always open."""

from __future__ import annotations

import typer

from cli.common import console, db_session, plain, print_json, print_table
from patchflow.ops import audit

window_app = typer.Typer(help="A policy's maintenance windows (installs and restarts only "
                         "inside one).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    from cli.policies import policies_app

    policies_app.add_typer(window_app, name="window")


@window_app.command("add")
def window_add(
    policy: str = typer.Argument(..., help="The policy"),
    days: str = typer.Option(None, "--days",
                             help="Days the window starts on: mon,tue | mon-fri | daily"),
    start: str = typer.Option(None, "--from", help="HH:MM (24-hour), local to --tz"),
    end: str = typer.Option(None, "--to",
                            help="HH:MM; not after --from: the window crosses midnight"),
    tz: str = typer.Option(None, "--tz", help="IANA time zone, e.g. Europe/Paris or UTC"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add a maintenance window to a policy."""
    from patchflow.cycle.window_store import add_window

    with db_session() as session:
        out = add_window(session, policy, days, start, end, tz, audit.cli_actor())
    if as_json:
        print_json(out)
        return
    console.print(f"policy {plain(out['policy'])}: window {out['id']} {plain(out['days'])} "
                  f"{out['from']}-{out['to']} {plain(out['tz'])}"
                  + (" (open now)" if out["open_now"] else ""), highlight=False)


@window_app.command("list")
def window_list(policy: str = typer.Argument(...),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """A policy's maintenance windows (none: installs may go at any time)."""
    from patchflow.cycle.window_store import list_windows

    with db_session() as session:
        rows = list_windows(session, policy)
    if as_json:
        print_json(rows)
        return
    print_table(f"{len(rows)} maintenance windows" + ("" if rows else " (always open)"),
                ["Id", "Days", "From", "To", "Time zone", "Open now", "Next opening (UTC)"],
                [[r["id"], r["days"], r["from"], r["to"], r["tz"],
                  "yes" if r["open_now"] else "", (r["next_open"] or "")[:16]] for r in rows])


@window_app.command("delete")
def window_delete(policy: str = typer.Argument(...),
                  window_id: int = typer.Argument(..., help="The window's id (`window list`)")
                  ) -> None:
    """Remove a maintenance window from a policy."""
    from patchflow.cycle.window_store import delete_window

    with db_session() as session:
        delete_window(session, policy, window_id, audit.cli_actor())
    console.print(f"maintenance window {window_id} removed", highlight=False)
