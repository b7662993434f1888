"""Admin API for patch servers: the same rules as `patchflow server ...`, via patchflow.servers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from models.db import session_scope
from patchflow import servers as svc
from server.auth import admin_name, settings_of
from server.errors import responses

router = APIRouter(prefix="/api/v1/admin/servers", tags=["admin: patch servers"],
                   dependencies=[Depends(admin_name)],
                   responses=responses(400, 401, 403, 422))
_ONE = responses(404, 409)


class ServerBody(BaseModel):
    """Fields left out (or null) keep their value on edit and take the default on create."""

    model_config = ConfigDict(extra="forbid")

    host: str | None = None
    port: int | None = None
    upstream: str | None = Field(
        None, description="microsoft | wsus | server:NAME | https://host:port")
    wsus_url: str | None = None
    msrc_source: str | None = None
    winget_source: str | None = None
    winget_packages: list[str] | None = None
    proxy: str | None = None
    proxy_user: str | None = None
    proxy_password: str | None = Field(None, description="Write-only; stored encrypted")
    upstream_server: str | None = Field(None, description="For an https:// upstream: which "
                                        "of its patch servers (default: its first)")
    upstream_token: str | None = Field(None, description="Replication token; write-only, "
                                       "stored encrypted")
    upstream_fingerprint: str | None = Field(None, description="SHA-256 of the upstream's "
                                             "certificate, pinned")

    def options(self) -> svc.ServerOptions:
        return svc.ServerOptions(**self.model_dump(exclude={"name"}))


class ServerCreate(ServerBody):
    name: str


class FiltersBody(BaseModel):
    """null keeps a filter as is; [] means All."""

    model_config = ConfigDict(extra="forbid")

    categories: list[str] | None = None
    languages: list[str] | None = None
    products: list[str] | None = None


class ScheduleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    frequency: str = Field(description="weekly | monthly")
    weekday: str
    at: str = Field(description="HH:MM, 24-hour")
    week_of_month: int | None = None


def _url(request: Request) -> str:
    return settings_of(request).database_url


def _as_filter(values: list[str] | None) -> str | None:
    if values is None:
        return None
    return ",".join(values) if values else "all"


@router.get("", summary="Patch servers with their sync status")
def list_servers(request: Request, sort: str = "name") -> list[dict[str, Any]]:
    with session_scope(_url(request)) as session:
        return [svc.server_to_dict(session, s) for s in svc.list_servers(session, sort)]


@router.post("", status_code=201, summary="Add a patch server", responses=responses(409))
def add_server(request: Request, body: ServerCreate) -> dict[str, Any]:
    with session_scope(_url(request)) as session:
        return svc.server_to_dict(session, svc.add_server(session, body.name, body.options()))


@router.patch("/{name}", summary="Change a patch server's settings (only the fields given)",
              responses=_ONE)
def edit_server(request: Request, name: str, body: ServerBody) -> dict[str, Any]:
    with session_scope(_url(request)) as session:
        return svc.server_to_dict(session, svc.edit_server(session, name, body.options()))


@router.delete("/{name}", summary="Delete a patch server", responses=_ONE)
def delete_server(request: Request, name: str) -> dict[str, Any]:
    with session_scope(_url(request)) as session:
        svc.delete_server(session, name)
    return {"name": name, "deleted": True}


@router.put("/{name}/filters", summary="Set the categories, languages and products synced",
            responses=_ONE)
def set_filters(request: Request, name: str, body: FiltersBody) -> dict[str, Any]:
    with session_scope(_url(request)) as session:
        server = svc.set_filters(session, name, _as_filter(body.categories),
                                 _as_filter(body.languages), _as_filter(body.products))
        return svc.filters_of(server)


@router.put("/{name}/schedule", summary="Set when a patch server syncs", responses=_ONE)
def set_schedule(request: Request, name: str, body: ScheduleBody) -> dict[str, Any]:
    with session_scope(_url(request)) as session:
        server = svc.set_schedule(session, name, body.frequency, body.weekday, body.at,
                                  body.week_of_month)
        return svc.server_to_dict(session, server)["schedule"]
