"""Admin API for the fleet: endpoints, enrollment tokens, groups and policies. Every route calls
the same patchflow.fleet function as the matching CLI command."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from patchflow import fleet
from patchflow.errors import UserError
from patchflow.fleet.inventory import validate_documents
from patchflow.fleet.tokens import NAME_PATTERN
from server.auth import admin_name, settings_of
from server.deps import SessionDep
from server.errors import InvalidDocument, responses
from server.params import HOSTNAME_PATTERN, TokenId

router = APIRouter(prefix="/api/v1/admin", tags=["admin: fleet"],
                   dependencies=[Depends(admin_name)], responses=responses(401, 403, 422))

# What fleet.validate_name enforces for group, policy and token names (documentation only: the
# server's own check, with its one-line error, stays the judge).
NAME_SCHEMA: dict[str, Any] = {"pattern": NAME_PATTERN, "maxLength": 128}
HOSTNAME_PATH = Path(description="An endpoint's host name (case-insensitive)",
                     json_schema_extra={"pattern": HOSTNAME_PATTERN,
                                        "maxLength": 255}, examples=["WS-0001"])


def _name(description: str | None = None, **kwargs: Any) -> Any:
    return Field(description=description, json_schema_extra=NAME_SCHEMA, **kwargs)


class _Body(BaseModel):
    # strict: JSON types as declared, so `"uses": true` is refused instead of stored as 1.
    model_config = ConfigDict(extra="forbid", strict=True)


class TokenCreate(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"group": "Berlin", "expires": "7d", "uses": 25}]})

    group: str | None = _name("Group the enrolled endpoints join", default=None)
    expires: str | None = Field("7d", description="30m, 12h, 7d, 2w or never")
    uses: int | None = Field(None, ge=1, description="How many enrollments; null = unlimited")


class GroupCreate(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "Berlin", "parent": "Sites"}]})

    name: str = _name()
    parent: str | None = _name(default=None)


class MoveRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"group": "Berlin"}]})

    group: str = _name()


class PolicyBody(_Body):
    """Fields left out (or null) keep their value on edit and take the default on create."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"groups": ["Berlin"], "scan_weekday": "Tuesday", "scan_at": "03:00",
         "scan_every_weeks": 2, "auto_install": False}]})

    patch_server: str | None = None
    groups: list[str] | None = Field(None, description="Exactly the groups that get the policy")
    roaming_microsoft: bool | None = None
    scan_weekday: str | None = None
    scan_at: str | None = Field(None, description="HH:MM, 24-hour")
    scan_every_weeks: int | None = None
    clear_schedule: bool = False
    run_if_missed: bool | None = None
    auto_install: bool | None = None
    auto_restart: bool | None = None

    def options(self) -> fleet.PolicyOptions:
        return fleet.PolicyOptions(**self.model_dump())


class PolicyCreate(PolicyBody):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"name": "Workstations", "patch_server": "local", "groups": ["Sites"],
         "scan_weekday": "Tuesday", "scan_at": "03:00", "run_if_missed": True}]})

    name: str = _name()

    def options(self) -> fleet.PolicyOptions:
        return fleet.PolicyOptions(**self.model_dump(exclude={"name"}))


def _url(request: Request) -> str:
    return settings_of(request).database_url


# --- endpoints ------------------------------------------------------------------------------


@router.get("/endpoints", summary="Endpoints, optionally in one group and its subgroups",
            responses=responses(404))
def list_endpoints(session: SessionDep, group: str | None = None) -> list[dict[str, Any]]:
    return fleet.list_endpoints(session, group)


_IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"oneOf": [
            {"$ref": "#/components/schemas/Inventory"},
            {"type": "array", "items": {"$ref": "#/components/schemas/Inventory"}},
        ]}}},
    }
}


@router.post("/endpoints/import", openapi_extra=_IMPORT_BODY,
             summary="Store inventories without an agent: one object or a list, all or nothing",
             responses=responses(400, 404, 409, 413))
async def import_endpoints(request: Request, group: str | None = None) -> dict[str, Any]:
    # Validated here rather than by a union-typed parameter, so an error names the document
    # and field ("document 2 of 3: os.arch: ...") instead of the union branch that failed.
    try:
        data = json.loads(await request.body())
    except ValueError as exc:
        raise UserError(f"malformed JSON: {exc}") from None
    try:
        items = validate_documents(data)
    except ValueError as exc:
        raise InvalidDocument(str(exc)) from None
    ids = await run_in_threadpool(
        fleet.write_transaction, _url(request),
        lambda session: fleet.import_inventories(session, items, group),
    )
    await run_in_threadpool(fleet.run_inventory_hooks, ids)
    return {"imported": len(ids), "hostnames": [doc.hostname for doc in items]}


@router.post("/endpoints/{hostname}/move", summary="Move an endpoint to another group",
             responses=responses(400, 404, 409, 413))
def move_endpoint(session: SessionDep, body: MoveRequest,
                  hostname: str = HOSTNAME_PATH) -> dict[str, Any]:
    endpoint = fleet.move_endpoint(session, hostname, body.group)
    return {"hostname": endpoint.hostname, "group": body.group}


@router.post("/endpoints/{hostname}/revoke", summary="Cut an endpoint's agent off",
             responses=responses(404, 409))
def revoke_endpoint(session: SessionDep, hostname: str = HOSTNAME_PATH) -> dict[str, Any]:
    endpoint = fleet.revoke_endpoint(session, hostname)
    return {"hostname": endpoint.hostname, "revoked": True}


class ApproveReenroll(_Body):
    unrevoke: bool = Field(False, description="Also lift the endpoint's revocation; approving "
                           "onto a revoked endpoint is refused (409) without it")


@router.post("/endpoints/{hostname}/approve-reenroll",
             summary="Let the agent waiting to re-enroll this host name replace its agent",
             responses=responses(400, 404, 409, 413))
def approve_reenroll(session: SessionDep, body: ApproveReenroll,
                     hostname: str = HOSTNAME_PATH) -> dict[str, Any]:
    endpoint = fleet.approve_reenrollment(session, hostname, unrevoke=body.unrevoke)
    return {"hostname": endpoint.hostname, "approved": True}


@router.post("/endpoints/{hostname}/reject-reenroll",
             summary="Refuse the agent waiting to re-enroll this host name",
             responses=responses(404))
def reject_reenroll(session: SessionDep, hostname: str = HOSTNAME_PATH) -> dict[str, Any]:
    return {"hostname": fleet.reject_reenrollment(session, hostname), "rejected": True}


# --- enrollment tokens ----------------------------------------------------------------------


@router.get("/enrollment-tokens", summary="Enrollment tokens (never the tokens themselves)")
def list_tokens(session: SessionDep) -> list[dict[str, Any]]:
    return fleet.list_enrollment_tokens(session)


@router.post("/enrollment-tokens", status_code=201,
             summary="Create an enrollment token; the response is the only time it is shown",
             responses=responses(400, 404, 413))
def create_token(session: SessionDep, body: TokenCreate) -> dict[str, Any]:
    token, row = fleet.create_enrollment_token(session, body.group, body.expires, body.uses)
    return {"token": token, **fleet.enrollment_token_to_dict(session, row)}


@router.delete("/enrollment-tokens/{token_id}", summary="Revoke an enrollment token",
               responses=responses(404))
def revoke_token(session: SessionDep, token_id: TokenId) -> dict[str, Any]:
    fleet.revoke_enrollment_token(session, token_id)
    return {"id": token_id, "revoked": True}


# --- groups ---------------------------------------------------------------------------------


@router.get("/groups", summary="Groups with their policy and endpoint counts")
def list_groups(session: SessionDep) -> list[dict[str, Any]]:
    return fleet.list_groups(session)


@router.post("/groups", status_code=201, summary="Add a group (optionally under a parent)",
             responses=responses(400, 404, 409, 413))
def add_group(session: SessionDep, body: GroupCreate) -> dict[str, Any]:
    group = fleet.add_group(session, body.name, body.parent)
    return {"name": group.name, "parent": body.parent}


# --- policies -------------------------------------------------------------------------------


@router.get("/policies", summary="Policies")
def list_policies(session: SessionDep) -> list[dict[str, Any]]:
    return fleet.list_policies(session)


@router.post("/policies", status_code=201, summary="Add a policy",
             responses=responses(400, 404, 409, 413))
def add_policy(session: SessionDep, body: PolicyCreate) -> dict[str, Any]:
    policy, notes = fleet.add_policy(session, body.name, body.options())
    return {**fleet.policy_to_dict(session, policy), "notes": notes}


@router.patch("/policies/{name}", summary="Change a policy (only the fields given)",
              responses=responses(400, 404, 409, 413))
def edit_policy(session: SessionDep, name: str, body: PolicyBody) -> dict[str, Any]:
    policy, notes = fleet.edit_policy(session, name, body.options())
    return {**fleet.policy_to_dict(session, policy), "notes": notes}


@router.delete("/policies/{name}", summary="Delete a policy (its groups keep no policy)",
               responses=responses(404, 409))
def delete_policy(session: SessionDep, name: str) -> dict[str, Any]:
    fleet.delete_policy(session, name)
    return {"name": name, "deleted": True}
