"""Operations commands: `patchflow demo`."""

from __future__ import annotations

import time

import typer

from cli.common import console, print_table


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo() -> None:
    """Run the workflow on a fresh demo home with the bundled sample catalog."""
    from patchflow.demo import prepare_home

    started = time.monotonic()
    home = prepare_home()
    from sqlalchemy import func, select

    from cli.init import init
    from cli.sync import _run_with_progress
    from models import Patch, PatchServer
    from models.db import dispose_all, session_scope
    from patchflow import servers
    from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR

    dispose_all()
    console.rule("patchflow demo")
    init(database_url=None, host="localhost", port=None, cert=None, key=None)
    with session_scope() as session:
        servers.add_server(session, "local", servers.ServerOptions(
            host="localhost", msrc_source=str(MSRC_DIR), winget_source=str(WINGET_DIR),
            winget_packages=list(PACKAGES)))
    console.print("added patch server local (bundled sample catalog)")
    status, message = _run_with_progress("local")
    console.print(f"sync: {status}: {message}")
    with session_scope() as session:
        rows = session.execute(
            select(Patch.source, Patch.severity, func.count())
            .group_by(Patch.source, Patch.severity)
            .order_by(Patch.source, Patch.severity)
        ).all()
        server = session.scalar(select(PatchServer).filter_by(name="local"))
        assert server is not None
        sync_status = server.sync_status
    print_table("Catalog after sync", ["Source", "Severity", "Patches"],
                [[s, sev, n] for s, sev, n in rows])
    console.print(f"demo home: {home}")
    console.print(f"done in {time.monotonic() - started:.1f}s")
    if sync_status != "Successful":
        raise typer.Exit(1)
