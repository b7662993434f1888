"""Select and install over HTTPS: the Patch Install view, the selection, EULAs and install jobs
for admins, and `GET /content/sha256/{hash}` for agents. Every admin route calls the same
patchflow.install function as the matching CLI command."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from models.db import session_scope
from patchflow import install as svc
from patchflow.catalog.content import ContentError, ContentStore, ContentTampered
from patchflow.errors import NotFoundError
from patchflow.install.jobs import fail_items_for_content
from patchflow.install.launch import launch
from patchflow.scanning.missing_query import MissingFilters
from server.auth import AgentCredentials, admin_name, agent_credentials, settings_of
from server.deps import SessionDep
from server.errors import Error, responses
from server.params import JobId, PatchRef

admin = APIRouter(prefix="/api/v1/admin", tags=["admin: install"],
                  dependencies=[Depends(admin_name)], responses=responses(401, 403, 422))
content = APIRouter(tags=["agent"])
Admin = Annotated[str, Depends(admin_name)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SelectBody(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"patch": "KB5034441", "endpoints": ["WS-0001", "WS-0002"]},
        {"patch": "Mozilla.Firefox@126.0", "all_affected": True}]})

    patch: str = Field(description="id, KB, PACKAGE@VERSION or a package with one missing version")
    endpoints: list[str] | None = None
    all_affected: bool = False


class UnselectBody(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"patch": "KB5034441", "endpoints": ["WS-0002"]}]})

    patch: str
    endpoints: list[str] | None = Field(None, description="null: the whole patch")


class JobCreate(_Body):
    """Without `patch`: the whole selection becomes the job (`install start`); with it, the
    named endpoints (or all affected) in one step (`install now`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"allow_restart": False},
        {"patch": "KB5034441", "endpoints": ["WS-0001"], "allow_restart": True}]})

    patch: str | None = None
    endpoints: list[str] | None = None
    all_affected: bool = False
    allow_restart: bool = False


def _url(request: Request) -> str:
    return settings_of(request).database_url


def _csv(value: str | None) -> tuple[str, ...]:
    return tuple(v.strip() for v in (value or "").split(",") if v.strip())


# --- the Patch Install view -------------------------------------------------------------------


@admin.get("/install/patches", summary="Missing patches with endpoints affected and selected",
           responses=responses(400, 404))
def install_list(
    session: SessionDep,
    group: str | None = None,
    subgroups: bool = False,
    severity: str | None = Query(None, description="comma-separated"),
    category: str | None = Query(None, description="comma-separated"),
    restart: str | None = Query(None, description="comma-separated"),
    eula: str | None = Query(None, description="accepted | not-accepted"),
    exploited: bool = Query(False, description="only patches fixing a CVE exploited in the "
                                               "wild (`install list --exploited`)"),
) -> list[dict[str, Any]]:
    filters = MissingFilters(group=group, subgroups=subgroups, severity=_csv(severity),
                             category=_csv(category), restart=_csv(restart), eula=eula,
                             exploited=exploited)
    return svc.install_list(session, filters)


@admin.get("/install/patches/{ref}", summary="One patch with the endpoints it is missing on",
           responses=responses(404))
def install_show(session: SessionDep, ref: PatchRef) -> dict[str, Any]:
    return svc.install_show(session, ref)


@admin.get("/install/selection", summary="The selected (patch, endpoint) pairs")
def selection(session: SessionDep) -> list[dict[str, Any]]:
    return svc.selection_rows(session)


@admin.post("/install/selection", summary="Select a patch for endpoints (or all affected)",
            responses=responses(400, 404, 409))
def select(session: SessionDep, body: SelectBody, who: Admin) -> dict[str, Any]:
    return svc.select_pairs(session, body.patch, body.endpoints, body.all_affected, who)


@admin.post("/install/selection/remove", summary="Unselect a patch (for some endpoints)",
            responses=responses(400, 404, 409))
def unselect(session: SessionDep, body: UnselectBody) -> dict[str, Any]:
    return svc.unselect_pairs(session, body.patch, body.endpoints)


@admin.delete("/install/selection", summary="Clear the selection (`install refresh`)")
def refresh(session: SessionDep) -> dict[str, Any]:
    return {"removed": svc.refresh_selection(session)}


# --- EULAs ------------------------------------------------------------------------------------


@admin.get("/eula/{ref}", summary="A patch's EULA: where to read it, accepted by whom and when",
           responses=responses(404))
def eula_show(session: SessionDep, ref: PatchRef) -> dict[str, Any]:
    return svc.show_eula(session, ref)


@admin.post("/eula/{ref}/accept", summary="Accept a patch's EULA (recorded with the token name)",
            responses=responses(400, 404, 409))
def eula_accept(session: SessionDep, ref: PatchRef, who: Admin) -> dict[str, Any]:
    return svc.accept_eula(session, ref, f"api:{who}")


# --- jobs -------------------------------------------------------------------------------------


@admin.post("/install/jobs", status_code=201,
            summary="Start an install job from the selection or for one patch",
            responses={**responses(404, 409),
                       400: {"model": Error,
                             "description": "EULA not accepted, nothing selected, …"}})
def create_job(request: Request, body: JobCreate, who: Admin) -> dict[str, Any]:
    # Two transactions, not a SessionDep: the job must be committed before the process
    # launched to drive it looks for it.
    with session_scope(_url(request)) as session:
        if body.patch:
            job = svc.install_now(session, body.patch, body.endpoints, body.all_affected,
                                  f"api:{who}", body.allow_restart)
        else:
            job = svc.start_from_selection(session, f"api:{who}", body.allow_restart)
        job_id = job.id
    pid = launch(job_id)
    with session_scope(_url(request)) as session:
        return {**svc.show_job(session, job_id, events=False), "launched_pid": pid}


@admin.get("/install/jobs", summary="Install jobs, newest first, with counts by item state")
def list_jobs(session: SessionDep, limit: int = Query(50, ge=1, le=1000)) -> list[dict[str, Any]]:
    return svc.list_jobs(session, limit)


@admin.get("/install/jobs/{job_id}", summary="One job with its items and their event trails",
           responses=responses(404))
def show_job(session: SessionDep, job_id: JobId, events: bool = True) -> dict[str, Any]:
    return svc.show_job(session, job_id, events)


@admin.post("/install/jobs/{job_id}/cancel", summary="Cancel the items not finished yet",
            responses=responses(400, 404, 409))
def cancel_job(session: SessionDep, job_id: JobId, who: Admin) -> dict[str, Any]:
    return svc.cancel_job(session, job_id, f"api:{who}")


# --- content for agents -----------------------------------------------------------------------


@content.get("/content/sha256/{sha256}", summary="A content file by SHA-256 (agents)",
             response_class=FileResponse,
             responses={200: {"content": {"application/octet-stream": {}}},
                        **responses(403, 422),
                        401: {"model": Error, "description": "Not an enrolled agent"},
                        404: {"model": Error, "description": "Not in the content store"},
                        409: {"model": Error,
                              "description": "The stored file failed its hash check"},
                        503: {"model": Error,
                              "description": "The shared storage cannot be reached"}})
async def content_file(
    request: Request,
    credentials: Annotated[AgentCredentials, Depends(agent_credentials)],
    sha256: str = PathParam(pattern=r"^[0-9a-f]{64}$", description="lowercase hex"),
) -> FileResponse:
    await run_in_threadpool(credentials.verify)
    try:  # hashing a large file (or reading it from the shared storage) takes a while
        path = await run_in_threadpool(ContentStore().verified_path, sha256)
    except ContentTampered as exc:
        await run_in_threadpool(_fail_tampered, _url(request), sha256, str(exc))
        raise HTTPException(status_code=409, detail=str(exc)) from None
    except ContentError as exc:  # the shared storage is away: a server fault, not a bad file
        raise HTTPException(status_code=503, detail=str(exc)) from None
    if path is None:
        raise NotFoundError(f"content {sha256} is not in this server's content store")
    return FileResponse(path, media_type="application/octet-stream",
                        headers={"Cache-Control": "private, max-age=31536000, immutable"})


def _fail_tampered(database_url: str, sha256: str, reason: str) -> None:
    with session_scope(database_url) as session:
        fail_items_for_content(session, sha256, f"content not served: {reason}")


router = APIRouter()
router.include_router(admin)
router.include_router(content)
