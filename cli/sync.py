"""`patchflow sync NAME [--stop]`: run the Prefect sync flow with a progress display."""

from __future__ import annotations

import os
import threading
import time

import typer

from cli.common import console, db_session, plain, print_json
from models.enums import SyncStatus
from patchflow.catalog import servers as svc
from patchflow.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("sync")(sync)


def sync(
    name: str,
    stop: bool = typer.Option(False, "--stop", help="Stop the running sync of NAME"),
    force: bool = typer.Option(
        False, "--force", help="Start even if the status says Running (after a crash)"
    ),
    prefetch: bool = typer.Option(
        False, "--prefetch", help="Also download the content of every patch offered now "
        "(otherwise it is fetched when an install needs it)"
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome as one JSON object"),
) -> None:
    """Sync a patch server from its upstream (or stop a running sync)."""
    from patchflow.ops import stopping

    with db_session() as session:
        if stop:
            flow_run_id = stopping.stop_sync(session, name)
        elif svc.get_server(session, name).sync_status == SyncStatus.RUNNING and not force:
            raise UserError(
                f"patch server {name!r} is already syncing (use --stop, or --force after a crash)"
            )
    if stop:
        stopping.cancel_elsewhere([flow_run_id])
        if as_json:
            print_json({"server": name, "stop_requested": True})
        else:
            console.print(f"stop requested for the sync of {name}")
        return
    started = time.monotonic()
    status, message = _run_with_progress(name, prefetch, quiet=as_json)
    if as_json:
        print_json({"server": name, "status": str(status), "message": message,
                    "seconds": round(time.monotonic() - started, 1)})
    else:
        console.print(f"sync of {name}: [bold]{plain(status)}[/bold]: {plain(message)}")
    if status != SyncStatus.SUCCESSFUL:
        raise typer.Exit(1)


def _run_with_progress(name: str, prefetch: bool = False,
                       quiet: bool = False) -> tuple[str, str]:
    # Prefect's INFO lines still reach its API (the UI); the terminal shows the progress line.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from flows.sync import sync as sync_flow

    outcome: dict[str, str] = {}
    done = threading.Event()

    def watch() -> None:
        with console.status(f"syncing {name}: starting Prefect…") as status:
            while not done.wait(0.5):
                with db_session() as session:
                    server = svc.get_server(session, name)
                    if server.sync_status == SyncStatus.RUNNING and server.sync_message:
                        status.update(f"syncing {name}: {plain(server.sync_message)}")

    watcher = threading.Thread(target=watch, daemon=True)
    if console.is_terminal and not quiet:
        watcher.start()
    started = time.monotonic()
    try:
        outcome = sync_flow(name, prefetch=prefetch)
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join(2)
    if not quiet:
        console.print(f"finished in {time.monotonic() - started:.1f}s")
    return outcome["status"], outcome["message"]
