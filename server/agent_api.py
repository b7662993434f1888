"""The agent API: enrollment, inventory upload, job polling and job results."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from patchflow import fleet
from patchflow.errors import UserError
from patchflow.inventory import Hostname, Inventory, describe_errors
from server.auth import AgentCredentials, agent_credentials, client_ip, settings_of
from server.errors import InvalidDocument, error_response

router = APIRouter(prefix="/api/v1/agent", tags=["agent"])
Credentials = Annotated[AgentCredentials, Depends(agent_credentials)]


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    hostname: Hostname
    domain: Annotated[str, StringConstraints(max_length=255)] | None = None


class EnrollResponse(BaseModel):
    agent_id: str
    secret: str = Field(description="Shown once; the server keeps only its hash.")
    hostname: str


class InventoryAck(BaseModel):
    hostname: str
    programs: int
    updates: int


class JobResult(BaseModel):
    """A job item's progress or outcome, as the agent reports it."""

    model_config = ConfigDict(extra="forbid")

    state: Literal["downloading", "installing", "succeeded", "failed", "reboot pending"]
    exit_code: int | None = None
    message: Annotated[str, StringConstraints(max_length=4000)] | None = None
    details: dict[str, Any] | None = None


@router.post(
    "/enroll",
    status_code=201,
    response_model=EnrollResponse,
    summary="Trade an enrollment token for an agent id and secret",
    responses={401: {"description": "unknown token"},
               403: {"description": "token expired, used up or revoked"},
               429: {"description": "too many failed enrollments from this address"}},
)
def enroll(body: EnrollRequest, request: Request) -> Any:
    settings = settings_of(request)
    limiter = request.app.state.enroll_limiter
    address = client_ip(request) or "unknown"
    wait = limiter.retry_after(address)
    if wait:
        return error_response(
            429, f"too many failed enrollments from {address}: retry in {wait} s",
            {"Retry-After": str(wait)},
        )
    try:
        enrollment = fleet.write_transaction(
            settings.database_url,
            lambda session: fleet.enroll(session, body.token, body.hostname, body.domain,
                                         client_ip(request), settings.internal),
        )
    except (fleet.Unauthorized, fleet.Forbidden):
        limiter.record_failure(address)
        raise
    return JSONResponse(
        EnrollResponse(agent_id=enrollment.agent_id, secret=enrollment.secret,
                       hostname=enrollment.hostname).model_dump(),
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


def _store_upload(body: bytes, credentials: AgentCredentials) -> tuple[dict[str, Any], int]:
    """Runs in a worker thread: authenticate, parse and validate in one pass (pydantic's JSON
    parser, not json.loads then validation), store in one transaction."""
    settings = credentials.settings
    with fleet.db_slot(settings.database_url):
        agent = credentials.verify()  # before parsing: strangers' bodies are not worth the CPU
    try:
        doc = Inventory.model_validate_json(body)
    except ValidationError as exc:
        raise _body_error(exc) from None
    sighting = fleet.Sighting(credentials.ip, settings.internal)
    fleet.write_transaction(
        settings.database_url,
        lambda session: fleet.store_inventory(session, doc, agent.endpoint_id, sighting),
    )
    ack = {"hostname": doc.hostname, "programs": len(doc.programs),
           "updates": len(doc.unique_updates())}
    return ack, agent.endpoint_id


def _body_error(exc: ValidationError) -> UserError:
    errors = exc.errors(include_url=False)
    malformed = [e for e in errors if e.get("type") == "json_invalid"]
    if malformed:
        detail = str(malformed[0].get("msg", "invalid JSON")).removeprefix("Invalid JSON: ")
        return UserError(f"malformed JSON: {detail}")
    if errors and not errors[0].get("loc"):
        return InvalidDocument(f"request body: {errors[0].get('msg', 'invalid')}")
    return InvalidDocument(describe_errors(errors))


@router.put(
    "/inventory",
    response_model=InventoryAck,
    summary="Replace this endpoint's inventory",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Inventory"}}}}},
    responses={400: {"description": "malformed JSON"}, 413: {"description": "body too large"},
               422: {"description": "a field fails validation (named in the error)"}},
)
async def upload_inventory(
    request: Request, credentials: Credentials, background: BackgroundTasks
) -> Response:
    body = await request.body()
    ack, endpoint_id = await run_in_threadpool(_store_upload, body, credentials)
    # After the commit and after the response: a slow or failing rescan never fails an upload.
    background.add_task(fleet.run_inventory_hooks, [endpoint_id])
    return JSONResponse(ack)


def _poll(credentials: AgentCredentials) -> bytes:
    with fleet.db_slot(credentials.settings.database_url):
        endpoint_id = credentials.verify().endpoint_id
    jobs = fleet.poll_jobs(endpoint_id)
    return json.dumps(jobs).encode() if jobs else b"[]"


@router.get("/jobs", response_model=list[dict[str, Any]], summary="Jobs waiting for this agent")
async def jobs(credentials: Credentials) -> Response:
    # The hot path at fleet scale: one thread hop, no response-model round trip.
    return Response(await run_in_threadpool(_poll, credentials), media_type="application/json")


@router.post("/jobs/{job_id}/result", summary="Report a job's progress or outcome")
def job_result(job_id: int, body: JobResult, credentials: Credentials) -> dict[str, Any]:
    agent = credentials.verify()
    fleet.record_job_result(agent.endpoint_id, job_id, body.model_dump())
    return {"accepted": True}
