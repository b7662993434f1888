"""The audit log's one door: `record` writes who did what, `list_events` reads it back.

The console, the CLI and the API call `record` where the act happens, in the act's own
transaction (a refused or rolled-back act leaves no line). `cli_actor` names the person at a
terminal: the operating-system account, since the CLI has no login of its own.
"""

from __future__ import annotations

import getpass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import AuditEvent
from models.base import utcnow
from patchflow.errors import UserError

SOURCES = ("console", "cli", "api")
MAX_LIMIT = 10_000


def cli_actor() -> str:
    """'cli:root': the account that ran the command (the CLI has no login)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def record(session: Session, actor: str, action: str, target: str | None = None,
           detail: str | None = None, source: str = "console") -> AuditEvent:
    """Add one line to the audit log in the caller's transaction."""
    if source not in SOURCES:
        raise ValueError(f"unknown audit source {source!r}")
    event = AuditEvent(at=utcnow(), actor=(actor or "unknown")[:128], source=source,
                       action=action[:64], target=target[:255] if target else None,
                       detail=detail[:4000] if detail else None)
    session.add(event)
    session.flush()
    return event


def list_events(session: Session, limit: int = 200, actor: str | None = None,
                action: str | None = None) -> list[dict[str, Any]]:
    """The newest events first; `actor` and `action` match exactly (action also by prefix,
    'server.' gives every patch-server act)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise UserError(f"the limit must be between 1 and {MAX_LIMIT}")
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if action:
        query = query.where(AuditEvent.action.startswith(action, autoescape=True)
                            if action.endswith(".") else AuditEvent.action == action)
    return [{"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "source": e.source,
             "action": e.action, "target": e.target, "detail": e.detail}
            for e in session.scalars(query)]
