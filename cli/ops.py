"""Operations commands: `patchflow demo`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from cli.common import console, db_session, print_table
from patchflow.errors import UserError


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
    """Run the whole workflow on a fresh demo home: sync, enrol, scan, install, rescan, report."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from patchflow.demo import run_demo

    started = time.monotonic()
    console.rule("patchflow demo")
    try:
        result = run_demo(lambda line: console.print(f"• {line}", highlight=False))
    except (KeyboardInterrupt, UserError):
        raise
    except Exception as exc:  # the demo's promise is one line, never a traceback
        import traceback

        from patchflow.demo import demo_home

        log = demo_home() / "demo-error.log"
        log.write_text(traceback.format_exc(), encoding="utf-8")
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"demo failed: {first} (details in {log})") from None
    print_table("Demo summary", ["Step", "Outcome"], result.steps)
    sev = result.dashboard.get("missing_by_severity", {})
    print_table("Missing patches by severity (after the install)",
                ["Severity", "Patches", "Endpoint pairs"],
                [[name, v["patches"], v["pairs"]] for name, v in sev.items()])
    overview = result.dashboard.get("scan_overview", {})
    console.print("scan overview: " + ", ".join(f"{k} {v}" for k, v in overview.items()))
    console.print("HTML reports:")
    for path in result.reports:
        console.print(f"  {path}", highlight=False)
    console.print(f"demo home: {result.home}  ({time.monotonic() - started:.0f} s)")
    if not result.ok:
        raise typer.Exit(1)
