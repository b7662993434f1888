"""The audit log: who did what, when, through which door (console, CLI, API).

One row per administrative act (a login, an install started, a deletion, a settings change),
written by patchflow.ops.audit.record in the same transaction as the act, so the log never shows
something that was rolled back. Rows are only ever added.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16))  # console | cli | api
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(255))
    detail: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("ix_audit_events_at", "at"),)
