"""Operations commands: `patchflow demo`, `backup`, `restore`."""

from __future__ import annotations

import os
import time
from pathlib import Path

import typer

from cli.common import console, db_session, print_json, print_table
from patchflow.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
    app.command("backup")(backup)
    app.command("restore")(restore)


def backup(
    out: Path = typer.Option(..., "--out", help="Archive to write (FILE.exp)"),
    with_content: bool = typer.Option(False, "--with-content", help="Include the content store"),
    encrypt: bool = typer.Option(False, "--encrypt", help="Encrypt the archive with a passphrase "
                                 "(from --passphrase-file or PATCHFLOW_BACKUP_PASSPHRASE)"),
    passphrase_file: Path = typer.Option(None, "--passphrase-file",
                                         help="File whose first line is the passphrase"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Back up the whole patch database (and optionally the content store) to one archive."""
    from models.db import get_engine
    from patchflow import config
    from patchflow.backup import PASSPHRASE_ENV, create_backup, passphrase_from

    passphrase = None
    if encrypt:
        passphrase = passphrase_from(passphrase_file)
        if passphrase is None:
            raise UserError(f"--encrypt needs a passphrase: --passphrase-file FILE or "
                            f"{PASSPHRASE_ENV} (never on the command line)")
    elif passphrase_file is not None:
        raise UserError("--passphrase-file goes with --encrypt")
    with db_session():
        pass  # refuses an uninitialised or outdated database with a clear message
    summary = create_backup(get_engine(), out, config.content_dir() if with_content else None,
                            passphrase=passphrase)
    rows = sum(summary.tables.values())
    if as_json:
        print_json({"path": str(summary.path), "tables": summary.tables, "rows": rows,
                    "content_files": summary.content_files if with_content else 0,
                    "encrypted": encrypt})
        return
    console.print(f"backup written to {summary.path}: {len(summary.tables)} tables, {rows} rows"
                  + (f", {summary.content_files} content files" if with_content else "")
                  + (", encrypted" if encrypt else ""))


def restore(
    archive: Path = typer.Argument(..., help="A backup written by `patchflow backup`"),
    force: bool = typer.Option(False, "--force", help="Replace a database that is not empty"),
    passphrase_file: Path = typer.Option(None, "--passphrase-file", help="For an encrypted "
                                         "backup: file whose first line is the passphrase"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Restore a backup into this home's database (SQLite or MariaDB, either direction)."""
    from patchflow import config
    from patchflow.backup import restore_archive

    passphrase = _restore_passphrase(archive, passphrase_file)
    counts = restore_archive(config.database_url(), archive, passphrase, force=force)
    if as_json:
        print_json({"rows": sum(counts.values()), "tables": counts})
        return
    console.print(f"restored {sum(counts.values())} rows into {len(counts)} tables")


def _restore_passphrase(archive: Path, passphrase_file: Path | None) -> str | None:
    """File, then environment, then (in a terminal) a hidden prompt; None for a plain archive."""
    import sys

    from patchflow.backup import passphrase_from
    from patchflow.backup_crypto import is_encrypted

    if not is_encrypted(archive):
        return None
    passphrase = passphrase_from(passphrase_file)
    if passphrase is None and sys.stdin.isatty():
        passphrase = typer.prompt(f"Passphrase for {archive.name}", hide_input=True) or None
    return passphrase


def demo(
    serve: bool = typer.Option(False, "--serve", help="Then keep the console and the Prefect UI "
                               "running on the demo's data until Ctrl+C (loopback only)"),
    port: int = typer.Option(6201, "--port", min=1, max=65535,
                             help="With --serve: the console's HTTPS port"),
    prefect_port: int = typer.Option(4200, "--prefect-port", min=1, max=65535,
                                     help="With --serve: the Prefect UI's port"),
) -> None:
    """Run the whole workflow on a fresh demo home: sync, enrol, scan, install, rescan, report.
    With --serve, then look at it in the web console and the Prefect UI."""
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    if serve:  # before the demo's half minute, not after
        from deployments.prefect_server import port_is_free

        for name, number in (("--port", port), ("--prefect-port", prefect_port)):
            if not port_is_free("127.0.0.1", number):
                raise UserError(f"port {number} is in use on 127.0.0.1: choose another with "
                                f"{name}")
    from patchflow.demo import run_demo
    from patchflow.install.outcome import plural

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
    exploited = result.dashboard.get("exploited", {})
    console.print(f"exploited in the wild (CISA KEV, MSRC, Mozilla): "
                  f"{plural(exploited.get('patches', 0), 'patch', 'patches')} missing on "
                  f"{plural(exploited.get('pairs', 0), 'endpoint pair')}, "
                  f"{plural(result.dashboard.get('overdue_kev', 0), 'pair')} past their KEV "
                  "due date")
    console.print("HTML reports:")
    for path in result.reports:
        console.print(f"  {path}", highlight=False)
    console.print(f"demo home: {result.home}  ({time.monotonic() - started:.0f} s)")
    if not result.ok:
        raise typer.Exit(1)
    if serve:
        _serve_demo(port, prefect_port)
    else:
        print("To look at it in the web console and the Prefect UI:\n"
              "  make demo-serve    (or: patchflow demo --serve)", flush=True)


def _serve_demo(port: int, prefect_port: int) -> None:
    from patchflow.demo import start_service, stop_service

    console.print("starting the console and the Prefect UI on the demo home…", highlight=False)
    proc, service = start_service(port, prefect_port)
    try:
        # Plain lines, never wrapped: the password and the URLs must survive a copy.
        print(f"Console:    {service.console_url}\n"
              f"            user {service.username}, password {service.password} (shown once; "
              "the next demo run wipes it)\n"
              f"            self-signed certificate, SHA-256 {service.fingerprint}\n"
              f"Prefect UI: {service.prefect_url}\n"
              f"server log: {service.log}\n"
              "Press Ctrl+C to stop.", flush=True)
        code = proc.wait()
    except KeyboardInterrupt:
        code = stop_service(proc)
        console.print("stopped", highlight=False)
        if code not in (0, -2, 130):
            raise typer.Exit(1) from None
        return
    finally:
        stop_service(proc)
    if code != 0:
        raise UserError(f"the demo server stopped by itself (exit {code}; see {service.log})")
