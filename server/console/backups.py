"""Backup and restore from the browser: create a backup and download it, upload one, and
restore one after a confirmation that says what it replaces.

Everything goes through patchflow.ops.backup_files, which calls patchflow.ops.backup like `patchflow
backup` and `patchflow restore --force` do, so an upload is checked (format, schema, every
member's SHA-256, safe names) before it is kept and again before it is restored, and a
restore writes in one transaction. Backups live in PATCHFLOW_HOME/backups.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse

from patchflow.errors import UserError
from patchflow.ops import audit, backup_files
from server.console.core import (
    ConsoleRoute,
    database_url,
    db,
    form_of,
    redirect,
    render,
    user_of,
)
from server.console.wording import for_web, plural

router = APIRouter(route_class=ConsoleRoute)
BACK = "/console/admin/backup"


@router.get("/admin/backup")
def backup_page(request: Request) -> Response:
    return render(request, "backup.html", title="Backup and restore", nav="admin",
                  backups=backup_files.list_backups(),
                  folder=str(backup_files.backups_dir()))


@router.post("/admin/backup/new")
def create_backup(request: Request) -> Response:
    with_content = form_of(request).flag("with_content")
    try:
        summary = backup_files.create(database_url(request), with_content)
    except UserError as exc:
        return redirect(BACK, str(exc), "error")
    rows = sum(summary.tables.values())
    with db(request) as session:
        files = (f", {plural(summary.content_files, 'content file')}" if with_content else "")
        audit.record(session, user_of(request), "backup.create", summary.path.name,
                     plural(rows, "row") + files)
    return redirect(BACK, f"Created backup {summary.path.name} ({plural(rows, 'row')} in "
                    f"{plural(len(summary.tables), 'table')}).")


@router.get("/admin/backup/files/{name}")
def download(request: Request, name: str) -> Response:
    path = backup_files.backup_path(name)
    with db(request) as session:
        audit.record(session, user_of(request), "backup.download", name)
    return FileResponse(path, media_type="application/octet-stream", filename=name)


@router.post("/admin/backup/upload")
def upload(request: Request) -> Response:
    form = form_of(request)
    filename, data = form.files.get("archive", ("", b""))
    try:
        saved = backup_files.save_upload(data, filename)
    except UserError as exc:
        return redirect(BACK, str(exc), "error")
    with db(request) as session:
        audit.record(session, user_of(request), "backup.upload", saved["name"], filename)
    return redirect(f"{BACK}/files/{saved['name']}/restore",
                    f"Uploaded {filename} as {saved['name']}; its checks passed.")


def _confirm(request: Request, name: str, status: int = 200, error: str | None = None
             ) -> Response:
    info = backup_files.describe(name)
    return render(request, "backup_restore.html", status=status, title="Restore a backup",
                  nav="admin", info=info, error=error)


@router.get("/admin/backup/files/{name}/restore")
def restore_page(request: Request, name: str) -> Response:
    return _confirm(request, name)


@router.post("/admin/backup/files/{name}/restore")
def restore(request: Request, name: str) -> Response:
    form = form_of(request)
    if form.get("confirmed") != "yes":
        return _confirm(request, name)
    who = user_of(request)
    try:
        counts = backup_files.restore(database_url(request), name, form.raw("passphrase"))
    except UserError as exc:
        return _confirm(request, name, 400, for_web(str(exc)))
    rows = sum(counts.values())
    with db(request) as session:  # after the restore: the restored log gets this line
        audit.record(session, who, "backup.restore", name, f"{plural(rows, 'row')} restored")
    return redirect(BACK, f"Restored {name}: {plural(rows, 'row')} in "
                    f"{plural(len(counts), 'table')}. Administrators and sessions are the "
                    "backup's now: log in again if asked.")
