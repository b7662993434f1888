"""Operations commands: `patchflow backup`, `restore` (`patchflow demo` is cli/demo.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.common import console, db_session, print_json
from patchflow.errors import UserError


def register(app: typer.Typer) -> None:
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
    from patchflow.ops.backup import PASSPHRASE_ENV, create_backup, passphrase_from

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
    from patchflow.ops.backup import restore_archive

    passphrase = _restore_passphrase(archive, passphrase_file)
    counts = restore_archive(config.database_url(), archive, passphrase, force=force)
    if as_json:
        print_json({"rows": sum(counts.values()), "tables": counts})
        return
    console.print(f"restored {sum(counts.values())} rows into {len(counts)} tables")


def _restore_passphrase(archive: Path, passphrase_file: Path | None) -> str | None:
    """File, then environment, then (in a terminal) a hidden prompt; None for a plain archive."""
    import sys

    from patchflow.ops.backup import passphrase_from
    from patchflow.ops.backup_crypto import is_encrypted

    if not is_encrypted(archive):
        return None
    passphrase = passphrase_from(passphrase_file)
    if passphrase is None and sys.stdin.isatty():
        passphrase = typer.prompt(f"Passphrase for {archive.name}", hide_input=True) or None
    return passphrase
