"""Every failure leaves the API as `{"error": "<one line>"}` with a 4xx (or 5xx) status: agents
and scripts read one field, and no traceback or internal detail reaches a client."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from patchflow.errors import NotFoundError, UserError
from patchflow.fleet import Conflict, Forbidden, Stale, Unauthorized
from patchflow.fleet.inventory import describe_errors

log = logging.getLogger("patchflow.server")


class Error(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: str = Field(description="One line, for people and logs",
                       examples=["no install job 7"])


# What each status means wherever the API returns it; routes pick the ones they can return.
STATUS_TEXT = {
    400: "Malformed JSON, or a request the server refuses as given (the error says why)",
    401: "Missing or invalid credentials",
    403: "Credentials revoked, or not allowed here",
    404: "No such object",
    409: "Conflicts with the current state (a name taken, a concurrent change)",
    412: "The change is not against the stored state: send the whole of it",
    413: "Request body over the server's limit",
    422: "A parameter or body field fails validation (named in the error)",
    428: "A precondition header (If-Match) is required",
    429: "Too many failures: wait the Retry-After seconds",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries with the error model, for a route's or router's decorator."""
    return {status: {"model": Error, "description": STATUS_TEXT[status]} for status in statuses}


class InvalidDocument(UserError):
    """A body that parsed as JSON but failed validation where a route validates it itself (422)."""


class PreconditionRequired(UserError):
    """A conditional request sent without its condition (428)."""


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    one_line = " ".join(str(message).split())[:500]
    return JSONResponse({"error": one_line}, status_code=status, headers=headers)


def _status_of(exc: UserError) -> int:
    if isinstance(exc, Unauthorized):
        return 401
    if isinstance(exc, Forbidden):
        return 403
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, Conflict):
        return 409
    if isinstance(exc, Stale):
        return 412
    if isinstance(exc, InvalidDocument):
        return 422
    if isinstance(exc, PreconditionRequired):
        return 428
    return 400


def user_error_response(exc: UserError) -> JSONResponse:
    """A UserError's answer, as every route gives it."""
    status = _status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, str(exc), headers)


async def _user_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UserError)
    return user_error_response(exc)


def explain_invalid(errors: Sequence[Any]) -> tuple[int, str]:
    """FastAPI's request errors, or pydantic's own where a route validates its body itself, as
    (status, one line): malformed JSON is 400; anything else 422, naming the first field or,
    when the body as a whole is wrong (not an object), the body."""
    malformed = [e for e in errors if e.get("type") == "json_invalid"]
    if malformed:
        return 400, f"malformed JSON: {malformed[0].get('ctx', {}).get('error', 'invalid JSON')}"
    first = errors[0] if errors else {}
    # FastAPI places the body at ("body",); pydantic validating a body alone at ().
    if errors and tuple(first.get("loc", ())) in ((), ("body",)):
        return 422, f"request body: {first.get('msg', 'invalid')}"
    return 422, describe_errors(errors)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(*explain_invalid(list(exc.errors())))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", str(exc).splitlines()[0])
    return error_response(503, "database unavailable, retry later", {"Retry-After": "10"})


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    # Two requests raced for the same unique value (a host name); the loser can retry.
    return error_response(409, "conflicting concurrent change, retry")


async def _out_of_range(request: Request, exc: Exception) -> JSONResponse:
    # A number from the request too large for a database column or C integer; bounded types
    # refuse known ones at validation, this catches any route that still lets one through.
    log.warning("out-of-range number on %s %s: %s", request.method, request.url.path, exc)
    return error_response(422, "a number in the request is out of range")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(500, "internal server error")


def install(app: FastAPI) -> None:
    app.add_exception_handler(UserError, _user_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(OverflowError, _out_of_range)
    app.add_exception_handler(Exception, _unexpected)
