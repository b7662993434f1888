"""The patch cycle's own records: approvals, declines, automatic approval rules, cycle runs.

Approvals are per group (an approval for a group covers its subgroups), declines are global (a
declined patch is offered nowhere). Each row says who and when, and approvals say why, because
"why is this being installed on my server" is the first question an administrator asks.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class PatchApproval(Base):
    """A manual approval of one patch for one group."""

    __tablename__ = "patch_approvals"
    __table_args__ = (UniqueConstraint("patch_id", "group_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    patch_id: Mapped[int] = mapped_column(ForeignKey("patches.id", ondelete="CASCADE"),
                                          index=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id", ondelete="CASCADE"),
                                          index=True)
    deadline: Mapped[dt.date | None] = mapped_column(Date)
    approved_by: Mapped[str] = mapped_column(String(128))
    approved_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)


class PatchDecline(Base):
    """A declined patch: not offered, not counted as missing, until undeclined."""

    __tablename__ = "patch_declines"

    patch_id: Mapped[int] = mapped_column(
        ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True)
    declined_by: Mapped[str] = mapped_column(String(128))
    declined_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)


class ApprovalRule(Base):
    """An automatic approval rule; list columns are JSON lists, NULL meaning "any"."""

    __tablename__ = "approval_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    group_ids: Mapped[str] = mapped_column(Text)  # JSON list of group ids
    severities: Mapped[str | None] = mapped_column(Text)
    categories: Mapped[str | None] = mapped_column(Text)
    products: Mapped[str | None] = mapped_column(Text)
    exploited: Mapped[bool] = mapped_column(Boolean, default=False)
    delay_days: Mapped[int] = mapped_column(Integer, default=0)
    deadline_days: Mapped[int | None] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class CycleRun(Base):
    """One run of the patch cycle for a policy: its steps and plan as JSON documents."""

    __tablename__ = "cycle_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int | None] = mapped_column(
        ForeignKey("policies.id", ondelete="SET NULL"), index=True)
    policy_name: Mapped[str] = mapped_column(String(128))
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default="Pending")
    trigger: Mapped[str] = mapped_column(String(16), default="manual")
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    started_by: Mapped[str | None] = mapped_column(String(128))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    install_job_id: Mapped[int | None] = mapped_column(Integer)
    steps: Mapped[str | None] = mapped_column(Text)  # JSON list of {name, state, summary}
    plan: Mapped[str | None] = mapped_column(Text)  # JSON list of plan rows
    message: Mapped[str | None] = mapped_column(Text)


class PolicyRing(Base):
    """One deployment ring of a policy: its groups get the cycle's installs after the ring
    before it, once that ring's success rate passed the gate (and the delay is over)."""

    __tablename__ = "policy_rings"
    __table_args__ = (UniqueConstraint("policy_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"),
                                           index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(64))
    group_ids: Mapped[str] = mapped_column(Text)  # JSON list of group ids
    delay_minutes: Mapped[int] = mapped_column(Integer, default=0)
    min_success_rate: Mapped[int] = mapped_column(Integer, default=95)  # percent of the ring before
    # "rate": the success rate above decides; "manual": the cycle pauses before this ring
    # until an administrator resumes (or rejects) it.
    gate: Mapped[str] = mapped_column(String(16), default="rate", server_default="rate")


class MaintenanceWindow(Base):
    """A policy's maintenance window: its endpoints get install items and may restart only
    inside one (patchflow/cycle/windows.py). Times are wall-clock times in `time_zone`; a
    range whose end is not after its start crosses midnight. No windows: always allowed."""

    __tablename__ = "maintenance_windows"

    id: Mapped[int] = mapped_column(primary_key=True)
    policy_id: Mapped[int] = mapped_column(ForeignKey("policies.id", ondelete="CASCADE"),
                                           index=True)
    days: Mapped[str] = mapped_column(String(32))  # "mon,tue": the days a range starts on
    start_time: Mapped[str] = mapped_column(String(5))  # "02:00"
    end_time: Mapped[str] = mapped_column(String(5))  # "05:00"
    time_zone: Mapped[str] = mapped_column(String(64))  # IANA, e.g. "Europe/Paris"
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
