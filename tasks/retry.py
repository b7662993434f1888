"""Retries for the tasks that do I/O (database, HTTP, SMTP): only for errors that a second try
can cure, with backoff, said in the task's description so the Prefect UI shows it.

Transient: a lost or refused database connection, a locked or timed-out database, a network
error, HTTP 5xx or 429, an SMTP disconnect or 4xx answer. Everything else (a bad setting, a
missing server, a bug) fails at once: retrying it only delays the one-line error.

Every task given these retries is safe to run again: it reads, or writes in one transaction
that is either committed or not, or picks up from the state stored in the database.
"""

from __future__ import annotations

import smtplib
import socket
from typing import Any

DELAYS: list[float] = [2.0, 10.0, 30.0]
NOTE = ("Retried up to 3 times (after 2, 10 and 30 s) on transient errors only: a lost, "
        "locked or timed-out database, a network error, HTTP 5xx/429, an SMTP disconnect or "
        "4xx answer.")


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is worth another try."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _transient_one(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _transient_one(exc: BaseException) -> bool:
    from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

    if isinstance(exc, OperationalError):
        # SQLite reports a schema mistake as OperationalError too: not transient.
        text = str(exc.orig if exc.orig is not None else exc).lower()
        return not any(s in text for s in ("no such table", "no such column", "syntax error"))
    if isinstance(exc, (DisconnectionError, InterfaceError)):
        return True
    if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout, socket.gaierror)):
        return True
    if isinstance(exc, (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError)):
        return True
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= int(exc.smtp_code) < 500
    status = _http_status(exc)
    if status is not None:
        return status >= 500 or status == 429
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a dependency
        return False
    return isinstance(exc, httpx.TransportError)


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def retry_condition(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect's retry_condition_fn: retry only when the task failed with a transient error."""
    try:
        state.result()
    except BaseException as exc:  # the task's own exception, re-raised by Prefect
        return is_transient(exc)
    return False


def io_retries(description: str) -> dict[str, Any]:
    """Keyword arguments for @task: the retries above, and `description` with the note."""
    from prefect.cache_policies import NO_CACHE

    return {"retries": len(DELAYS), "retry_delay_seconds": list(DELAYS),
            "retry_condition_fn": retry_condition, "cache_policy": NO_CACHE,
            "description": f"{description.strip()} {NOTE}"}
