"""What a route declares in its signature instead of doing itself: `SessionDep` is the request's
database session, so a route reads as the service call it makes.

The session's transaction ends when the route returns, before the response is sent
(`scope="function"`). FastAPI's default scope for a yield dependency ("request") runs the exit
code after the response has gone out, so a client that creates something and reads it back at
once could read before the commit. A route that raises rolls back, and the error still reaches
server.errors' handlers, which answer as before. A failed commit raises there too (409 for a
lost race, 503 for a database gone)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from models.db import session_scope
from server.auth import settings_of


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request: committed on return, rolled back on any error."""
    with session_scope(settings_of(request).database_url) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]
