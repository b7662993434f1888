"""The agent API: enrollment, inventory upload, job polling and job results."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from models.db import get_engine
from patchflow import fleet
from patchflow.errors import UserError
from patchflow.fleet.inventory import Hostname, Inventory, InventoryDelta
from server.auth import AgentCredentials, agent_credentials, client_ip, settings_of
from server.errors import (
    Error,
    InvalidDocument,
    PreconditionRequired,
    error_response,
    explain_invalid,
    responses,
)
from server.params import HOSTNAME_PATTERN, ExitCode, JobId
from server.ratelimit import subject_of

router = APIRouter(prefix="/api/v1/agent", tags=["agent"])
Credentials = Annotated[AgentCredentials, Depends(agent_credentials)]
# What the server's host-name check enforces (surrounding blanks are stripped first).
HOSTNAME_SCHEMA = {"type": "string", "pattern": HOSTNAME_PATTERN,
                   "maxLength": 255, "description": "Case-insensitive; stored upper-case",
                   "examples": ["WS-0001"]}
# A whole inventory larger than this is parsed in a worker thread, not on the event loop (a
# 200-program one is ~45 KB, ~0.7 ms to validate and digest).
LOOP_PARSE_BYTES = 256 * 1024
# Agent routes answer 401 (missing or wrong credentials) and 403 (endpoint revoked).
AGENT_ERRORS = responses(401, 403)


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"token": "pfe_3q2-7Rk...", "hostname": "WS-0001", "domain": "corp.example"}]})

    token: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    hostname: Annotated[Hostname, WithJsonSchema(HOSTNAME_SCHEMA)]
    domain: Annotated[str, StringConstraints(max_length=255)] | None = None


class EnrollResponse(BaseModel):
    agent_id: str
    secret: str = Field(description="Shown once; the server keeps only its hash.")
    hostname: str
    pending_approval: bool = Field(
        False, description="The host name belongs to an existing endpoint: this agent is a "
        "re-enrolment waiting for an administrator (`patchflow endpoints approve-reenroll`). "
        "Until then its inventory uploads are refused (409), it gets no jobs and the existing "
        "endpoint is untouched.")


class InventoryAck(BaseModel):
    hostname: str = Field(description="The endpoint's name, whatever host name was reported")
    reported_hostname: str = Field(description="The host name in the uploaded document")
    programs: int
    updates: int
    unchanged: bool = Field(
        False, description="Present and true when `If-None-Match` named the stored inventory: "
        "nothing was parsed or rewritten (the counts are the stored inventory's).")


class JobResult(BaseModel):
    """A job item's progress or outcome, as the agent reports it."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"state": "succeeded", "exit_code": 3010, "message": "installed, restart pending"},
        {"state": "downloading"}]})

    state: Literal["downloading", "installing", "succeeded", "failed", "reboot pending"]
    exit_code: ExitCode | None = None
    message: Annotated[str, StringConstraints(max_length=4000)] | None = None
    details: dict[str, Any] | None = None


@router.post(
    "/enroll",
    status_code=201,
    response_model=EnrollResponse,
    summary="Trade an enrollment token for an agent id and secret",
    responses={**responses(400, 409, 413, 422),
               401: {"model": Error, "description": "Unknown token"},
               403: {"model": Error, "description": "Token expired, used up or revoked"},
               429: {"model": Error, "description": "Too many failed enrollments from this "
                                                     "address with this token (or in all)"}},
)
def enroll(body: EnrollRequest, request: Request) -> Any:
    settings = settings_of(request)
    limiter = request.app.state.enroll_limiter
    address = client_ip(request) or "unknown"
    subject = subject_of(body.token)
    wait = limiter.retry_after(settings.database_url, address, subject)
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
        limiter.record_failure(settings.database_url, address, subject)
        raise
    return JSONResponse(
        EnrollResponse(agent_id=enrollment.agent_id, secret=enrollment.secret,
                       hostname=enrollment.hostname,
                       pending_approval=enrollment.pending).model_dump(),
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )


def _uploading_agent(credentials: AgentCredentials) -> fleet.AgentIdentity:
    """The agent whose upload this is, refused before its body is parsed: strangers' bodies
    are not worth the CPU."""
    with fleet.db_slot(credentials.settings.database_url):
        agent = credentials.verify()
    if agent.pending:
        # Nothing of a re-enrolment awaiting approval is stored: no inventory means nothing to
        # scan, count, report or install on. 409, not 403: the agent keeps running and polling.
        raise fleet.Conflict(
            "this agent's re-enrolment of an existing endpoint awaits approval by an "
            "administrator (patchflow endpoints approve-reenroll); inventory not stored")
    return agent


def store_upload(
    body: bytes, credentials: AgentCredentials, wanted: str | None
) -> dict[str, Any]:
    """Runs in a worker thread (for the route, or before routing: server.agent_fast_path):
    authenticate, answer an unchanged inventory without parsing, else parse and validate in
    one pass (pydantic's JSON parser, not json.loads then validation) and store."""
    settings = credentials.settings
    engine = get_engine(settings.database_url)
    agent = _uploading_agent(credentials)
    sighting = fleet.Sighting(credentials.ip, settings.internal)
    assert credentials.agent_id is not None  # verify() refused a missing one
    if wanted:
        with fleet.db_slot(settings.database_url):
            entry = fleet.load_agent(engine, credentials.agent_id, digest=wanted)
            ack = (fleet.unchanged_inventory(engine, credentials.agent_id, entry, wanted,
                                             sighting) if entry is not None else None)
        if ack is not None:
            return ack  # nothing new to scan
    doc, digest = _parsed(body)
    # Stored together with the uploads arriving meanwhile (one commit for many).
    fleet.store_agent_inventory(settings.database_url, doc, agent.endpoint_id, sighting, digest)
    return _stored(credentials, agent, doc, digest)


async def store_known_upload(body: bytes, credentials: AgentCredentials,
                             agent: fleet.AgentIdentity) -> dict[str, Any]:
    """`store_upload` on the event loop, for an agent that memory alone authenticated and whose
    upload names no inventory memory knows to be stored (server.agent_fast_path). Parsing and
    validating hold the GIL wherever they run; here they run one after the other instead of
    in 32 worker threads taking it from each other and from the writer. A body past
    LOOP_PARSE_BYTES is parsed in a worker thread all the same: validating 5,000 programs
    takes ~14 ms, which every other request on the loop would wait."""
    settings = credentials.settings
    if len(body) > LOOP_PARSE_BYTES:
        doc, digest = await run_in_threadpool(_parsed, body)
    else:
        doc, digest = _parsed(body)
    await fleet.store_agent_inventory_async(settings.database_url, doc, agent.endpoint_id,
                                            fleet.Sighting(credentials.ip, settings.internal),
                                            digest)
    return _stored(credentials, agent, doc, digest)


def store_changes(body: bytes, credentials: AgentCredentials, base: str | None) -> dict[str, Any]:
    """`store_upload` for an inventory sent as changes against the stored one named `base`."""
    settings = credentials.settings
    agent = _uploading_agent(credentials)
    if base is None:
        raise PreconditionRequired(
            'If-Match: "<digest of the stored inventory>" is required with changes')
    delta = _delta(body)
    fleet.store_agent_delta(settings.database_url, delta, agent.endpoint_id,
                            fleet.Sighting(credentials.ip, settings.internal), base)
    return _stored(credentials, agent, delta, delta.digest)


async def store_known_changes(body: bytes, credentials: AgentCredentials,
                              agent: fleet.AgentIdentity, base: str) -> dict[str, Any]:
    """`store_changes` on the event loop, for an agent that memory alone authenticated
    (server.agent_fast_path): changes are small to parse, and the inventory writer commits
    them while the loop goes on, so the request needs no worker thread of its own."""
    settings = credentials.settings
    delta = _delta(body)
    await fleet.store_agent_delta_async(settings.database_url, delta, agent.endpoint_id,
                                        fleet.Sighting(credentials.ip, settings.internal), base)
    return _stored(credentials, agent, delta, delta.digest)


def _parsed(body: bytes) -> tuple[Inventory, str | None]:
    """A whole inventory's document and digest."""
    try:
        doc = Inventory.model_validate_json(body)
    except ValidationError as exc:
        raise _body_error(exc) from None
    return doc, fleet.body_digest(body)


def _delta(body: bytes) -> InventoryDelta:
    try:
        return InventoryDelta.model_validate_json(body)
    except ValidationError as exc:
        raise _body_error(exc) from None


def _stored(credentials: AgentCredentials, agent: fleet.AgentIdentity,
            doc: Inventory | InventoryDelta, digest: str | None) -> dict[str, Any]:
    """After the commit: memory learns the new digest, the endpoint is queued for a rescan,
    and the answer names the endpoint and the counts."""
    assert credentials.agent_id is not None  # verify() refused a missing one
    fleet.remember_stored(get_engine(credentials.settings.database_url), credentials.agent_id,
                          doc, digest, credentials.ip)
    # In this thread rather than as a background task (a second thread hop per upload): the
    # server's hook only queues the endpoint for a rescan, and a failing hook is logged, never
    # fails the upload.
    fleet.run_inventory_hooks([agent.endpoint_id])
    programs, updates = doc.counts()
    # The endpoint keeps its name, whatever the document says (recorded as reported_hostname).
    return {"hostname": agent.hostname, "reported_hostname": doc.hostname,
            "programs": programs, "updates": updates}


def _body_error(exc: ValidationError) -> UserError:
    status, message = explain_invalid(exc.errors(include_url=False))
    return UserError(message) if status == 400 else InvalidDocument(message)


@router.put(
    "/inventory",
    response_model=InventoryAck,
    summary="Replace this endpoint's inventory",
    openapi_extra={
        "parameters": [{
            "name": "If-None-Match", "in": "header", "required": False,
            "schema": {"type": "string", "maxLength": 256},
            "description": 'The SHA-256 of the inventory in canonical form, quoted: `"<64 hex '
                           'digits>"` (agent.transport.inventory_digest). When it names the '
                           "stored inventory the answer says `unchanged` and nothing is "
                           "parsed or rewritten; anything else is ignored."}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Inventory"}}}}},
    responses={**AGENT_ERRORS, **responses(400, 409, 413, 422)},
)
async def upload_inventory(request: Request, credentials: Credentials) -> Response:
    # An unchanged inventory that memory alone answers never gets here, nor the upload of an
    # agent memory knows, unless storing it failed (server.agent_fast_path).
    body = await request.body()
    wanted = fleet.requested_digest(request.headers.get("if-none-match"))
    ack = await run_in_threadpool(store_upload, body, credentials, wanted)
    return JSONResponse(ack)


@router.patch(
    "/inventory",
    response_model=InventoryAck,
    summary="Change this endpoint's inventory: what was added and removed since the last one",
    openapi_extra={
        "parameters": [{
            "name": "If-Match", "in": "header", "required": True,
            "schema": {"type": "string", "maxLength": 256},
            "description": 'The digest of the stored inventory these changes are against, '
                           'quoted (`"<64 hex digits>"`): the one the agent uploaded last. '
                           "412 when it is not the stored one, or the changes do not apply: "
                           "the agent then uploads the whole inventory (PUT)."}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/InventoryDelta"}}}}},
    responses={**AGENT_ERRORS, **responses(400, 409, 412, 413, 422, 428)},
)
async def change_inventory(request: Request, credentials: Credentials) -> Response:
    # Changes from an agent memory knows are stored before routing (server.agent_fast_path).
    body = await request.body()
    base = fleet.requested_digest(request.headers.get("if-match"))
    ack = await run_in_threadpool(store_changes, body, credentials, base)
    return JSONResponse(ack)


def _poll(credentials: AgentCredentials) -> bytes:
    with fleet.db_slot(credentials.settings.database_url):
        endpoint_id = credentials.verify().endpoint_id
    jobs = fleet.poll_jobs(endpoint_id)
    return json.dumps(jobs).encode() if jobs else b"[]"


@router.get("/jobs", response_model=list[dict[str, Any]], summary="Jobs waiting for this agent",
            responses=AGENT_ERRORS)
async def jobs(credentials: Credentials) -> Response:
    # An idle agent known in memory never gets here (server.agent_fast_path). Otherwise one
    # thread hop, no response-model round trip.
    return Response(await run_in_threadpool(_poll, credentials), media_type="application/json")


@router.post("/jobs/{job_id}/result", summary="Report a job's progress or outcome",
             responses={**AGENT_ERRORS, **responses(400, 404, 409, 413, 422)})
def job_result(job_id: JobId, body: JobResult, credentials: Credentials) -> dict[str, Any]:
    with fleet.db_slot(credentials.settings.database_url):  # a fleet reports results at once
        agent = credentials.verify()
    fleet.record_job_result(agent.endpoint_id, job_id, body.model_dump())
    return {"accepted": True}
