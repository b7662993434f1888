"""Reports: generate with filters, the list of past runs (report_runs), each run's HTML opened in
the browser and its CSV files downloaded.

Generating runs the Prefect `report` flow with the arguments `patchflow report` gives it, after
the same input checks, so a report made here and one made on the command line are the same
files. Report files are served only from the folder their run recorded, and only .html and
.csv: a path in the URL cannot reach anything else in PATCHFLOW_HOME. With a shared storage
(`[storage] url`) they are streamed from there instead, so the console on any node opens the
reports a worker on another node wrote.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import ReportRun
from models.enums import Category, EulaStatus, RestartRequired, Severity
from patchflow import fleet
from patchflow.catalog import storage as shared_storage
from patchflow.errors import NotFoundError, UserError
from patchflow.reporting import service as reporting
from patchflow.scanning.missing_query import MissingFilters
from server.console import runs
from server.console.core import (
    ConsoleRoute,
    Form,
    db,
    field_errors,
    form_of,
    redirect,
    render,
    user_of,
)
from server.params import MAX_DB_ID

router = APIRouter(route_class=ConsoleRoute)

KIND_LABELS = tuple(reporting.KIND_LABELS.items())
REPORT_FIELDS = (
    ("kinds", r"report kind"),
    ("formats", r"format"),
    ("since", r"--since"),
    ("until", r"--until"),
    ("eula", r"EULA"),
    ("severity", r"severity"),
    ("category", r"category"),
    ("restart", r"restart"),
    ("group", r"group"),
    ("endpoint", r"endpoint"),
)
# Report pages carry their own inline styles and nothing else: no script, no fetches.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
_FILE_TYPES = {".html": "text/html; charset=utf-8", ".csv": "text/csv; charset=utf-8"}
RunId = Annotated[int, PathParam(ge=1, le=MAX_DB_ID)]


def filters_from(form: Form) -> MissingFilters:
    """The Patch Install view's filters (and the report's date range) from a form."""
    return MissingFilters(
        endpoint=form.optional("endpoint"),
        group=form.optional("group"),
        subgroups=form.flag("subgroups"),
        severity=tuple(form.getlist("severity")),
        category=tuple(form.getlist("category")),
        restart=tuple(form.getlist("restart")),
        eula=form.optional("eula"),
        exploited=form.flag("exploited"),
        since=form.optional("since"),  # type: ignore[arg-type]
        until=form.optional("until"),  # type: ignore[arg-type]
    )


def choices() -> dict[str, Any]:
    return {"severities": [s.value for s in Severity],
            "categories": [c.value for c in Category],
            "restarts": [r.value for r in RestartRequired],
            "eulas": [("accepted", EulaStatus.ACCEPTED.value),
                      ("not-accepted", EulaStatus.NOT_ACCEPTED.value)],
            "kind_labels": KIND_LABELS}


def start_report(session: Session, kinds: list[str], filters: MissingFilters,
                 formats: list[str], who: str) -> runs.Run:
    """`patchflow report` from the console: every input checked before the flow starts."""
    request = reporting.preflight(session, kinds or None, formats or None, filters, None, 1000)
    runs.quiet_prefect()
    from flows.report import report_flow

    def work() -> dict[str, Any]:
        result: dict[str, Any] = report_flow(
            kinds=request.kinds, filters=request.filters.to_json(), formats=request.formats,
            out_dir=str(request.run_dir), created_by=who)
        return result

    label = f"the report ({', '.join(request.kinds)}; {request.filters.describe()})"
    return runs.launch(f"report:{request.run_dir.name}", label, who, work)


def report_rows(session: Session, limit: int = 50) -> list[dict[str, Any]]:
    rows = []
    try:
        shared = shared_storage.configured()
    except shared_storage.StorageError:
        shared = None  # the list still shows; opening a file says what is wrong
    for run in session.scalars(select(ReportRun).order_by(ReportRun.id.desc()).limit(limit)):
        folder = Path(run.path) if run.path else None
        if folder is not None and shared is not None:
            try:
                names = shared.files(reporting.report_key(folder))
            except shared_storage.StorageError:
                names = []
            files = [n for n in names if posixpath.splitext(n)[1] in _FILE_TYPES]
        else:
            files = sorted(p.name for p in folder.iterdir()
                           if p.is_file() and p.suffix in _FILE_TYPES) if folder and \
                folder.is_dir() else []
        try:
            described = MissingFilters.from_json(json.loads(run.filters or "{}")).describe()
        except (UserError, ValueError, TypeError):
            described = run.filters or ""
        rows.append({"id": run.id, "kind": run.kind, "created_at": run.created_at,
                     "created_by": run.created_by, "status": run.status, "message": run.message,
                     "filters": described, "html": "index.html" in files,
                     "csv": [f for f in files if f.endswith(".csv")]})
    return rows


def _page(request: Request, values: dict[str, Any], errors: dict[str, str],
          status: int = 200) -> Response:
    with db(request) as session:
        rows = report_rows(session)
        groups = [(g["name"], g["path"]) for g in fleet.list_groups(session)]
    running = [r for r in runs.runs("report:") if r.running]
    failed = [r for r in runs.runs("report:") if not r.running and r.error]
    return render(request, "reports.html", status=status, title="Reports", nav="reports",
                  rows=rows, running=running, failed=failed[:3], values=values, errors=errors,
                  groups=groups, **choices())


DEFAULT_VALUES: dict[str, Any] = {"kinds": list(reporting.KINDS),
                                  "formats": ["html", "csv"], "severity": [], "category": [],
                                  "restart": [], "eula": "", "endpoint": "", "group": "",
                                  "subgroups": False, "since": "", "until": ""}


@router.get("/reports")
def reports_page(request: Request) -> Response:
    return _page(request, DEFAULT_VALUES, {})


@router.get("/reports/status.json")
def reports_status(request: Request) -> Response:
    """Whether a report started here is still being built (the page reloads when done)."""
    return JSONResponse({"running": any(r.running for r in runs.runs("report:"))})


@router.post("/reports")
def generate(request: Request) -> Response:
    form = form_of(request)
    try:
        # `patchflow report` without --kinds builds them all; in the form, unticking every
        # kind is a mistake to point out, not a request for everything.
        if not form.getlist("kinds"):
            raise UserError("choose at least one report kind")
        if not form.getlist("formats"):
            raise UserError("choose at least one output format")
        filters = filters_from(form)
        with db(request) as session:
            start_report(session, form.getlist("kinds"), filters, form.getlist("formats"),
                         user_of(request))
    except UserError as exc:
        values = {**DEFAULT_VALUES, **{k: form.get(k) for k in
                                       ("eula", "endpoint", "group", "since", "until")},
                  "subgroups": form.flag("subgroups"),
                  **{k: form.getlist(k) for k in ("kinds", "formats", "severity", "category",
                                                  "restart")}}
        return _page(request, values, field_errors(exc, REPORT_FIELDS), 400)
    return redirect("/console/reports", "Generating the report: it appears in the list when "
                    "it is written.")


def _local_folder(run_id: int, folder: Path) -> Path:
    if not folder.is_dir():
        raise NotFoundError(f"the files of report run {run_id} are gone ({folder})")
    return folder.resolve()


@router.get("/reports/{run_id}")
def open_run(run_id: RunId) -> Response:
    return RedirectResponse(f"/console/reports/{run_id}/files/index.html", status_code=303)


def _is_report_file(folder: Path, rel: str) -> bool:
    """Only .html and .csv files inside the run's folder. A NUL byte or a name longer than the
    file system allows is no file of ours either, rather than an error from the OS."""
    if "\x00" in rel:
        return False
    try:
        path = (folder / rel).resolve()
        return (path.is_relative_to(folder) and path.suffix in _FILE_TYPES
                and path.is_file())
    except (OSError, ValueError):
        return False


def _is_report_key(rel: str) -> bool:
    """The same rule for a file on the shared storage, checked on the name alone: a relative
    path without '..', '.' or empty parts (nothing outside the run's folder), .html or .csv."""
    parts = rel.split("/")
    return ("\x00" not in rel and "\\" not in rel and len(rel) <= 1024
            and all(p not in ("", ".", "..") for p in parts)
            and posixpath.splitext(rel)[1] in _FILE_TYPES)


def _from_storage(shared: shared_storage.Storage, folder: Path, rel: str, what: str,
                  download: bool) -> Response:
    if not _is_report_key(rel):
        raise NotFoundError(f"no file {rel[:200]!r} in {what}")
    key = f"{reporting.report_key(folder)}/{rel}"
    try:
        chunks = shared.read_chunks(key)
        first = next(chunks, b"")  # a missing file is a 404 before the answer starts
    except FileNotFoundError:
        raise NotFoundError(f"no file {rel[:200]!r} in {what}") from None

    def body() -> Any:
        yield first
        yield from chunks

    name = posixpath.basename(rel)
    suffix = posixpath.splitext(rel)[1]
    headers = {"Content-Security-Policy": REPORT_CSP, "Cache-Control": "private, no-store"}
    if suffix == ".csv" or download:
        headers["Content-Disposition"] = f'attachment; filename="{name}"'
    return StreamingResponse(body(), media_type=_FILE_TYPES[suffix], headers=headers)


@router.get("/reports/folder/{name}/files/{rel:path}")
def report_file_by_folder(request: Request, name: str, rel: str,
                          download: bool = False) -> Response:
    """The links in a report run's Prefect summary: the run id is not known yet when it is
    written, its folder name is."""
    if not name or "/" in name or name in (".", "..") or "\x00" in name or len(name) > 255:
        raise NotFoundError(f"no report folder {name[:200]!r}")
    with db(request) as session:
        found = session.scalars(
            select(ReportRun).where(ReportRun.path.endswith(name, autoescape=True))
            .order_by(ReportRun.id.desc()).limit(20)).all()
    run = next((r for r in found if Path(r.path).name == name), None)
    if run is None:
        raise NotFoundError(f"no report folder {name[:200]!r}")
    return report_file(request, run.id, rel, download)


@router.get("/reports/{run_id}/files/{rel:path}")
def report_file(request: Request, run_id: RunId, rel: str, download: bool = False) -> Response:
    with db(request) as session:
        run = session.get(ReportRun, run_id)
        if run is None or not run.path:
            raise NotFoundError(f"no report run {run_id}")
        recorded = Path(run.path)
    shared = shared_storage.configured()
    if shared is not None:
        return _from_storage(shared, recorded, rel, f"report run {run_id}", download)
    folder = _local_folder(run_id, recorded)
    if not _is_report_file(folder, rel):
        raise NotFoundError(f"no file {rel[:200]!r} in report run {run_id}")
    path = (folder / rel).resolve()
    headers = {"Content-Security-Policy": REPORT_CSP, "Cache-Control": "private, no-store"}
    if path.suffix == ".csv" or download:
        return FileResponse(path, media_type=_FILE_TYPES[path.suffix], filename=path.name,
                            headers=headers)
    return FileResponse(path, media_type=_FILE_TYPES[path.suffix], headers=headers)
