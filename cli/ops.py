"""Operations commands: `patchflow demo`."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from cli.common import console, db_session, print_table


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("backup")(backup)
    app.command("restore")(restore)


def backup(
    out: Path = typer.Option(..., "--out", help="Archive to write (FILE.exp)"),
    with_content: bool = typer.Option(False, "--with-content", help="Include the content store"),
) -> None:
    """Back up the whole patch database (and optionally the content store) to one archive."""
    from models.db import get_engine
    from patchflow import config
    from patchflow.backup import create_backup

    with db_session():
        pass  # refuses an uninitialised or outdated database with a clear message
    summary = create_backup(get_engine(), out, config.content_dir() if with_content else None)
    rows = sum(summary.tables.values())
    console.print(f"backup written to {summary.path}: {len(summary.tables)} tables, {rows} rows"
                  + (f", {summary.content_files} content files" if with_content else ""))


def restore(
    archive: Path = typer.Argument(..., help="A backup written by `patchflow backup`"),
    force: bool = typer.Option(False, "--force", help="Replace a database that is not empty"),
) -> None:
    """Restore a backup into this home's database (SQLite or MariaDB, either direction)."""
    from models.db import get_engine
    from models.migrate import current_revision, upgrade
    from patchflow import config
    from patchflow.backup import read_manifest, restore_backup

    read_manifest(archive)  # a damaged file is refused before the target is touched
    if current_revision() is None:
        upgrade()
    counts = restore_backup(get_engine(), archive, force=force, content_dir=config.content_dir())
    console.print(f"restored {sum(counts.values())} rows into {len(counts)} tables")


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
