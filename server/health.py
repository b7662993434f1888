"""Liveness for load balancers and the agent's "is the server there" check; no credentials."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import text

from models.db import get_engine
from patchflow import __version__
from server.auth import settings_of

router = APIRouter(tags=["health"])


@router.get("/api/v1/health", summary="Server and database status")
def health(request: Request) -> dict[str, Any]:
    # An unreachable database raises OperationalError, which the error handlers turn into 503.
    with get_engine(settings_of(request).database_url).connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"status": "ok", "version": __version__, "database": "ok"}
