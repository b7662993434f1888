"""`patchflow feeds ...`: the vulnerability feeds (KEV, Mozilla, NVD) and the CPE mapping.

    feeds list [--json]                       source, status, timestamp, record count
    feeds set kev|mozilla|nvd --source URL|DIR|FILE|none
    feeds cpe set PACKAGE_ID VENDOR:PRODUCT   map a winget package to its NVD CPE
    feeds cpe list [--json]
    feeds sync [NAME...]                      the Prefect flow `patchflow-feeds-sync`
    feeds sync --stop [NAME...]               stop it (the feeds end Stopped)
"""

from __future__ import annotations

import os

import typer

from cli.common import console, db_session, plain, print_json, print_table
from models.enums import SyncStatus
from patchflow.catalog import vulnfeeds
from patchflow.errors import UserError

feeds_app = typer.Typer(no_args_is_help=True, help="Vulnerability feeds: KEV, Mozilla, NVD.")
cpe_app = typer.Typer(no_args_is_help=True,
                      help="Which NVD CPE (vendor:product) each winget package is.")


def register(app: typer.Typer) -> None:
    feeds_app.add_typer(cpe_app, name="cpe")
    app.add_typer(feeds_app, name="feeds")


@feeds_app.command("list")
def list_feeds(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """Each feed with its source, status, when that status was set and how many records."""
    with db_session() as session:
        rows = vulnfeeds.list_feeds(session)
    if as_json:
        print_json(rows)
        return
    print_table("Vulnerability feeds", ["Feed", "Source", "Status", "Timestamp", "Records",
                                        "Message"],
                [[r["name"], r["source"], r["status"], r["timestamp"] or "-", str(r["records"]),
                  r["message"] or ""] for r in rows])


@feeds_app.command("set")
def set_feed(
    name: str = typer.Argument(..., help="kev | mozilla | nvd"),
    source: str = typer.Option(..., "--source",
                               help="URL, folder or file to read the feed from; 'none' = off"),
) -> None:
    """Where a feed comes from: online URL, an offline folder/file (air-gapped), or none."""
    with db_session() as session:
        row = vulnfeeds.set_source(session, name, source)
        shown = row.source or "none"
        feed = row.name
    console.print(f"feed {feed}: source {plain(shown)}")


@feeds_app.command("sync")
def sync(names: list[str] = typer.Argument(None, help="kev, mozilla, nvd (default: all "
                                           "with a source)"),
         stop: bool = typer.Option(False, "--stop", help="Stop the running feed sync(s): "
                                   "they end Stopped, keeping what was stored"),
         as_json: bool = typer.Option(False, "--json", help="Print the outcome of each feed "
                                      "as JSON")) -> None:
    """Fetch, parse and store the feeds now (Prefect flow `patchflow-feeds-sync`)."""
    wanted = [vulnfeeds.feed_name(n) for n in names or []]
    if stop:
        _stop(wanted)
        return
    with db_session():
        pass  # refuses an uninitialised or old database before Prefect starts
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from flows.feeds import feeds_sync

    outcomes = feeds_sync(wanted or None)
    if as_json:
        print_json([{"name": o["name"], "status": str(o["status"]), "message": o["message"]}
                    for o in outcomes])
    else:
        for outcome in outcomes:
            console.print(f"feed {outcome['name']}: [bold]{plain(outcome['status'])}[/bold]: "
                          f"{plain(outcome['message'])}")
    if any(o["status"] != SyncStatus.SUCCESSFUL for o in outcomes):
        raise typer.Exit(1)


def _stop(wanted: list[str]) -> None:
    """Stop the flow runs syncing the (named) feeds: patchflow.ops.flowruns.stop_flow_run."""
    from patchflow.ops.flowruns import stop_flow_run

    with db_session() as session:
        running = [(r.name, r.flow_run_id) for r in vulnfeeds.running(session)
                   if not wanted or r.name in wanted]
    if not running:
        raise UserError("no feed is syncing" + (f" ({', '.join(wanted)})" if wanted else ""))
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    done: dict[str, str] = {}
    for _name, run_id in running:
        if run_id and run_id not in done:
            done[run_id] = stop_flow_run(run_id)
    ended = [run_id for run_id, how in done.items() if how == "ended"]
    if ended:  # stuck Running: the run is over, so nothing else will ever end these feeds
        with db_session() as session:
            for run_id in ended:
                vulnfeeds.end_run(session, run_id, SyncStatus.STOPPED,
                                  "interrupted: its sync ended without recording an outcome; "
                                  "what was stored before stays")
    for name, run_id in running:
        how = done.get(run_id or "", "unknown")
        if how == "ended":
            console.print(f"feed {name}: its sync had already ended: marked Stopped")
        elif how == "unknown":
            console.print(f"feed {name}: its sync runs elsewhere (another machine or Prefect "
                          "server): stop it there; `patchflow serve` marks it if it died")
        else:
            console.print(f"feed {name}: stop requested ({how}); it ends Stopped")


@cpe_app.command("set")
def cpe_set(
    package_id: str = typer.Argument(..., help="winget PackageIdentifier, e.g. 7zip.7zip"),
    cpe: str = typer.Argument(..., help="CPE vendor:product, e.g. 7-zip:7-zip"),
) -> None:
    """Map a package to its CPE (overrides the built-in mapping)."""
    with db_session() as session:
        row = vulnfeeds.set_cpe(session, package_id, cpe)
        text = f"{row.package_id} -> {row.cpe}"
    console.print(plain(text))


@cpe_app.command("list")
def cpe_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """Built-in and custom mappings; a package without one stays Unspecified."""
    with db_session() as session:
        rows = vulnfeeds.cpe_mappings(session)
    if as_json:
        print_json(rows)
        return
    print_table("CPE mapping", ["Package", "CPE", "Origin"],
                [[r["package_id"], r["cpe"], r["origin"]] for r in rows])
