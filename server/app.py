"""The FastAPI application. One router module per area: later layers (replication, install
jobs, the web console) add their module name to ROUTER_MODULES; each exposes `router`."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from patchflow import __version__
from patchflow.inventory import Inventory
from patchflow.scanning import register_inventory_hook, unregister_inventory_hook
from server import errors
from server.limits import BodyLimitMiddleware
from server.ratelimit import FailureLimiter
from server.settings import ServerSettings

ROUTER_MODULES: list[str] = [
    "server.health",
    "server.agent_api",
    "server.admin_api",
    "server.admin_servers",
    "server.replication_api",
    "server.install_api",
    "server.console",
]

DESCRIPTION = """\
patchflow's HTTPS API.

* **Agent** routes authenticate with `X-Agent-Id` and `Authorization: Bearer <secret>`, both
  returned once by `POST /api/v1/agent/enroll`.
* **Admin** routes take `Authorization: Bearer <token>` from `patchflow admin token create`.
* Every error is `{"error": "<one line>"}` with a 4xx status (5xx when the server is at fault).
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """While the server runs, uploaded inventories are rescanned in the background."""
    register_inventory_hook(background=True)
    try:
        yield
    finally:
        unregister_inventory_hook(background=True)


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """Build the app; settings default to patchflow.toml, read once here."""
    settings = settings or ServerSettings.from_config()
    app = FastAPI(title="patchflow", version=__version__, description=DESCRIPTION,
                  docs_url="/docs", redoc_url=None, openapi_url="/openapi.json",
                  lifespan=_lifespan)
    app.state.settings = settings
    app.state.enroll_limiter = FailureLimiter(settings.enroll_failures_per_minute)
    errors.install(app)
    for name in ROUTER_MODULES:
        app.include_router(importlib.import_module(name).router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    _document_inventory(app)
    return app


def _document_inventory(app: FastAPI) -> None:
    """The inventory routes read their body themselves (one-pass JSON validation, errors that
    name the document), so FastAPI does not see the model; add its schema to the components
    their `$ref`s point at."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = original()
            inventory = Inventory.model_json_schema(ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components.update(inventory.pop("$defs", {}))
            components["Inventory"] = inventory
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
