"""Liveness for load balancers and the agent's "is the server there" check; no credentials.

"ok" means the database takes writes, not merely that it answers: a database that reads but
cannot be written (a read-only file or folder, a full disk, a read-only server) fails every
agent result and inventory, so it is reported with 503. The driver's message goes to the log
only: this route answers anyone."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError

from models.db import check_writable
from patchflow import __version__
from server.auth import settings_of
from server.errors import error_response

router = APIRouter(tags=["health"])
log = logging.getLogger("patchflow.server")


@router.get("/api/v1/health", summary="Server and database status",
            responses={503: {"description": "The database cannot be reached or written"}})
def health(request: Request) -> Any:
    try:
        check_writable(settings_of(request).database_url)
    except DBAPIError as exc:
        log.warning("health: database unavailable or not writable: %s",
                    str(exc.orig or exc).splitlines()[0])
        return error_response(503, "database unavailable or not writable, retry later",
                              {"Retry-After": "10"})
    return JSONResponse({"status": "ok", "version": __version__, "database": "ok"})
