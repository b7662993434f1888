"""Admin API for patch servers: the same rules as `patchflow server ...`, via
patchflow.catalog.servers."""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, create_model

from patchflow.catalog import servers as svc
from server.auth import admin_name
from server.deps import SessionDep
from server.errors import responses

router = APIRouter(prefix="/api/v1/admin/servers", tags=["admin: patch servers"],
                   dependencies=[Depends(admin_name)],
                   responses=responses(400, 401, 403, 422))
_ONE = responses(404, 409)


def _option_fields() -> dict[str, Any]:
    """ServerOptions' fields as pydantic field definitions: same names, types, defaults and
    descriptions, so the body accepts exactly what the service takes."""
    hints = get_type_hints(svc.ServerOptions)
    return {f.name: (hints[f.name], Field(f.default, description=_description(f)))
            for f in dataclasses.fields(svc.ServerOptions)}


def _description(option: dataclasses.Field[Any]) -> str | None:
    """A field's description; the `--upstream` forms come from the connectors' registry."""
    text = option.metadata.get("description")
    return text() if callable(text) else text


_ServerFields: type[BaseModel] = create_model("_ServerFields", **_option_fields())


class ServerBody(_ServerFields):  # type: ignore[misc,valid-type]
    """Fields left out (or null) keep their value on edit and take the default on create."""

    model_config = ConfigDict(extra="forbid")

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


def _as_filter(values: list[str] | None) -> str | None:
    if values is None:
        return None
    return ",".join(values) if values else "all"


@router.get("", summary="Patch servers with their sync status")
def list_servers(session: SessionDep, sort: str = "name") -> list[dict[str, Any]]:
    return [svc.server_to_dict(session, s) for s in svc.list_servers(session, sort)]


@router.post("", status_code=201, summary="Add a patch server", responses=responses(409))
def add_server(session: SessionDep, body: ServerCreate) -> dict[str, Any]:
    return svc.server_to_dict(session, svc.add_server(session, body.name, body.options()))


@router.patch("/{name}", summary="Change a patch server's settings (only the fields given)",
              responses=_ONE)
def edit_server(session: SessionDep, name: str, body: ServerBody) -> dict[str, Any]:
    return svc.server_to_dict(session, svc.edit_server(session, name, body.options()))


@router.delete("/{name}", summary="Delete a patch server", responses=_ONE)
def delete_server(session: SessionDep, name: str) -> dict[str, Any]:
    svc.delete_server(session, name)
    return {"name": name, "deleted": True}


@router.put("/{name}/filters", summary="Set the categories, languages and products synced",
            responses=_ONE)
def set_filters(session: SessionDep, name: str, body: FiltersBody) -> dict[str, Any]:
    server = svc.set_filters(session, name, _as_filter(body.categories),
                             _as_filter(body.languages), _as_filter(body.products))
    return svc.filters_of(server)


@router.put("/{name}/schedule", summary="Set when a patch server syncs", responses=_ONE)
def set_schedule(session: SessionDep, name: str, body: ScheduleBody) -> dict[str, Any]:
    server = svc.set_schedule(session, name, body.frequency, body.weekday, body.at,
                              body.week_of_month)
    return svc.server_to_dict(session, server)["schedule"]
