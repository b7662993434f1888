"""The FastAPI application. One router module per area, each exposing `router`: ROUTERS lists
them in the order they are included, so the app's routes are readable here."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from patchflow import __version__
from patchflow.fleet.inventory import Inventory, InventoryDelta
from patchflow.scanning.service import register_inventory_hook, unregister_inventory_hook
from server import (
    admin_api,
    admin_servers,
    agent_api,
    console,
    errors,
    health,
    install_api,
    replication_api,
)
from server.agent_fast_path import AgentFastPath
from server.limits import BodyLimitMiddleware
from server.params import HOSTNAME_PATTERN
from server.ratelimit import FailureLimiter
from server.settings import ServerSettings

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    agent_api.router,
    admin_api.router,
    admin_servers.router,
    replication_api.router,
    install_api.router,
    console.router,
)

DESCRIPTION = """\
patchflow's HTTPS API.

* **Agent** routes authenticate with `X-Agent-Id` and `Authorization: Bearer <secret>`, both
  returned once by `POST /api/v1/agent/enroll`. Both headers are required: the two schemes
  (AgentId, AgentSecret) sit in one security requirement object, which OpenAPI reads as "and".
* **Admin** routes take `Authorization: Bearer <token>` from `patchflow admin token create`.
* Every error is `{"error": "<one line>"}` with a 4xx status (5xx when the server is at fault).
"""


YOUNG_COLLECTION = 10_000  # allocations between collections of the youngest generation


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the server runs, uploaded inventories are rescanned in the background, and what
    starting left alive is kept out of the garbage collector's full passes.

    Those objects (modules, the app, Prefect's and pydantic's schemas: ~290,000) are never
    garbage, yet every full collection traversed them all: 200-240 ms with every thread
    stopped, ten times in a 20-second burst of uploads, which was the uploads' p99 and a
    tenth of the server's CPU. Frozen, a full pass reads only what was made since (10-30 ms).
    Unfrozen at shutdown, so a process that starts apps again (the tests) does not keep the
    garbage of each.

    The youngest generation is collected every YOUNG_COLLECTION allocations instead of 700: a
    whole 200-program upload allocates a few thousand objects, and at 700 a collection in the
    middle of one promoted them, still in use, to older generations, which then traversed them
    again. Under a burst of whole uploads (bench.agent_api, `--phases changed,changes`) the
    collector's time went from 2.7 s to 1.3 s and whole uploads from 286/s to 305/s, p99 212
    to 165 ms; full collections still run (docs/benchmarks.md, eleventh pass). Restored at
    shutdown with the freeze."""
    register_inventory_hook(background=True, database_url=app.state.settings.database_url)
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
        unregister_inventory_hook(background=True)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """Build the app; settings default to patchflow.toml, read once here."""
    settings = settings or ServerSettings.from_config()
    app = FastAPI(title="patchflow", version=__version__, description=DESCRIPTION,
                  docs_url="/docs", redoc_url=None, openapi_url="/openapi.json",
                  lifespan=_lifespan)
    app.state.settings = settings
    app.state.enroll_limiter = FailureLimiter("enroll", settings.enroll_failures_per_minute)
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    # Added first, so it runs inside the body limit: bodies are read and bounded before it.
    app.add_middleware(AgentFastPath, settings=settings)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    _document_inventory(app)
    return app


# Rules the inventory validators enforce in code (BeforeValidator), invisible to the generated
# schema; said here so clients and schemathesis generate what the server accepts.
_INVENTORY_RULES = {
    ("Inventory", "hostname"): {"pattern": HOSTNAME_PATTERN, "maxLength": 255,
                                "examples": ["WS-0001"]},
    ("Update", "kb"): {"pattern": r"^(?:KB)?\d{4,9}$", "examples": ["KB5034441"]},
}
_INVENTORY_EXAMPLE = {
    "schema_version": 1, "hostname": "WS-0001", "domain": "corp.example",
    "os": {"name": "Windows 11 Pro", "display_version": "23H2", "build": 22631, "ubr": 3296,
           "arch": "x64"},
    "programs": [{"name": "Mozilla Firefox (x64 en-US)", "version": "126.0",
                  "publisher": "Mozilla", "arch": "x64", "scope": "machine"}],
    "updates": [{"kb": "KB5034441", "installed_on": "2024-05-14"}],
}


def _document_rules(components: dict[str, Any]) -> None:
    for (model, field), rules in _INVENTORY_RULES.items():
        prop = components.get(model, {}).get("properties", {}).get(field)
        if prop is not None and prop.get("type") == "string":
            prop.update(rules)
    if "Inventory" in components:
        components["Inventory"].setdefault("examples", [_INVENTORY_EXAMPLE])


def _error_ref() -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """What every route shares, said once here rather than on each decorator: routes with
    credentials answer 401/403, routes with a body 400 (malformed JSON) and 413 (over the size
    limit, from BodyLimitMiddleware), and 422 is `{"error": ...}` like every other error, not
    FastAPI's default list. Agent routes need both agent headers: one requirement object."""
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            security = operation.get("security")
            if security:
                names = {name for requirement in security for name in requirement}
                if {"AgentId", "AgentSecret"} <= names:
                    operation["security"] = [{"AgentId": [], "AgentSecret": []}]
                for status in ("401", "403"):
                    responses.setdefault(status, {"description": errors.STATUS_TEXT[int(status)],
                                                  **_error_ref()})
            if "requestBody" in operation:
                for status in ("400", "413"):
                    responses.setdefault(status, {"description": errors.STATUS_TEXT[int(status)],
                                                  **_error_ref()})
            for status, response in responses.items():
                if status.startswith(("4", "5")) and "content" not in response:
                    response.update(_error_ref())
                content = response.get("content", {}).get("application/json", {})
                if "HTTPValidationError" in str(content.get("schema", {})):
                    content["schema"] = {"$ref": "#/components/schemas/Error"}
    components = schema.get("components", {}).get("schemas", {})
    text = str(schema.get("paths", {}))
    for unused in ("HTTPValidationError", "ValidationError"):
        if f"/{unused}'" not in text and unused in components:
            del components[unused]
    components.setdefault("Error", errors.Error.model_json_schema())
    return schema


def _document_inventory(app: FastAPI) -> None:
    """The inventory routes (PUT, PATCH) read their body themselves (one-pass JSON validation,
    errors that name the document), so FastAPI does not see the models; add their schemas to
    the components their `$ref`s point at."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (Inventory, InventoryDelta):
                document = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(document.pop("$defs", {}))
                components[model.__name__] = document
            _document_rules(components)
            app.openapi_schema = document_errors(schema)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
