"""Policies: which patch server, roaming behaviour, scan schedule and automatic install, applied
to groups (and through them to subgroups that have no policy of their own)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import Group, PatchServer, Policy
from models.base import utcnow
from patchflow.errors import NotFoundError, UserError
from patchflow.fleet.groups import group_by_name
from patchflow.fleet.tokens import validate_name
from patchflow.fleet.tree import policy_names

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


@dataclass
class PolicyOptions:
    """Settable fields; None means "leave as is" on edit and "the default" on add."""

    patch_server: str | None = None
    groups: list[str] | None = None
    roaming_microsoft: bool | None = None
    scan_weekday: str | None = None
    scan_at: str | None = None
    scan_every_weeks: int | None = None
    clear_schedule: bool = False
    run_if_missed: bool | None = None
    auto_install: bool | None = None
    auto_restart: bool | None = None


def get_policy(session: Session, name: str) -> Policy:
    policy = session.scalar(select(Policy).where(Policy.name == name))
    if policy is None:
        raise NotFoundError(f"no policy named {name!r}")
    return policy


def _apply_policy(session: Session, policy: Policy, opts: PolicyOptions) -> list[str]:
    notes: list[str] = []
    if opts.patch_server is not None:
        server = session.scalar(select(PatchServer).where(PatchServer.name == opts.patch_server))
        if server is None:
            raise NotFoundError(f"no patch server named {opts.patch_server!r}")
        policy.patch_server_id = server.id
    for attr in ("roaming_microsoft", "run_if_missed", "auto_install", "auto_restart"):
        value = getattr(opts, attr)
        if value is not None:
            setattr(policy, attr, bool(value))
    if opts.clear_schedule:
        if opts.scan_weekday or opts.scan_at:
            raise UserError("--clear-schedule cannot be combined with --scan-weekday/--scan-at")
        policy.scan_weekday = policy.scan_at = policy.scan_start = None
        policy.run_if_missed = False
    schedule_changed = False
    if opts.scan_weekday is not None:
        weekday = opts.scan_weekday.strip().lower()
        if weekday not in WEEKDAYS:
            raise UserError(
                f"invalid weekday {opts.scan_weekday!r}: use one of {', '.join(WEEKDAYS)}"
            )
        schedule_changed |= policy.scan_weekday != weekday
        policy.scan_weekday = weekday
    if opts.scan_at is not None:
        if not _TIME.fullmatch(opts.scan_at):
            raise UserError(f"invalid time {opts.scan_at!r}: use HH:MM, 24-hour")
        schedule_changed |= policy.scan_at != opts.scan_at
        policy.scan_at = opts.scan_at
    if opts.scan_every_weeks is not None:
        if not 1 <= opts.scan_every_weeks <= 52:
            raise UserError("--scan-every-weeks must be between 1 and 52")
        schedule_changed |= policy.scan_every_weeks != opts.scan_every_weeks
        policy.scan_every_weeks = opts.scan_every_weeks
    if bool(policy.scan_weekday) != bool(policy.scan_at):
        raise UserError("a scan schedule needs both --scan-weekday and --scan-at")
    if schedule_changed and policy.scan_weekday:
        # "every N weeks" counts from here; deployments use it as the RRule's DTSTART.
        policy.scan_start = utcnow()
    if policy.run_if_missed and not policy.scan_weekday:
        raise UserError("--run-if-missed needs a scan schedule (--scan-weekday and --scan-at)")
    if policy.patch_server_id is None:
        raise UserError("--patch-server is required: the patch server this policy's endpoints use")
    if opts.groups is not None:
        session.flush()
        notes.extend(_assign_groups(session, policy, opts.groups))
    return notes


def _assign_groups(session: Session, policy: Policy, names: list[str]) -> list[str]:
    """Make `names` exactly the groups that carry this policy; a group moved away from another
    policy is reported, since a group has one policy at a time."""
    policies = policy_names(session)
    wanted = [group_by_name(session, name) for name in dict.fromkeys(names)]
    notes: list[str] = []
    for group in session.scalars(select(Group).where(Group.policy_id == policy.id)):
        if group not in wanted:
            group.policy_id = None
    for group in wanted:
        if group.policy_id not in (None, policy.id):
            notes.append(f"group {group.name} moved from policy {policies.get(group.policy_id)}")
        group.policy_id = policy.id
    session.flush()
    return notes


def add_policy(session: Session, name: str, opts: PolicyOptions) -> tuple[Policy, list[str]]:
    validate_name(name, "policy")
    if session.scalar(select(Policy.id).where(Policy.name == name)) is not None:
        raise UserError(f"a policy named {name!r} already exists")
    policy = Policy(name=name, use_patch_server=True, roaming_microsoft=False,
                    scan_every_weeks=1, run_if_missed=False, auto_install=False,
                    auto_restart=False, created_at=utcnow())
    session.add(policy)
    notes = _apply_policy(session, policy, opts)
    session.flush()
    return policy, notes


def edit_policy(session: Session, name: str, opts: PolicyOptions) -> tuple[Policy, list[str]]:
    policy = get_policy(session, name)
    notes = _apply_policy(session, policy, opts)
    session.flush()
    return policy, notes


def delete_policy(session: Session, name: str) -> None:
    policy = get_policy(session, name)
    session.execute(update(Group).where(Group.policy_id == policy.id).values(policy_id=None))
    session.delete(policy)
    session.flush()


def policy_to_dict(session: Session, policy: Policy) -> dict[str, Any]:
    server = session.get(PatchServer, policy.patch_server_id) if policy.patch_server_id else None
    groups = session.scalars(
        select(Group.name).where(Group.policy_id == policy.id).order_by(Group.name)
    )
    schedule = None
    if policy.scan_weekday:
        schedule = {
            "weekday": policy.scan_weekday,
            "at": policy.scan_at,
            "every_weeks": policy.scan_every_weeks,
            "start": policy.scan_start.isoformat() if policy.scan_start else None,
        }
    return {
        "name": policy.name,
        "patch_server": server.name if server else None,
        "groups": list(groups),
        "roaming_microsoft": policy.roaming_microsoft,
        "scan_schedule": schedule,
        "run_if_missed": policy.run_if_missed,
        "auto_install": policy.auto_install,
        "auto_restart": policy.auto_restart,
    }


def list_policies(session: Session) -> list[dict[str, Any]]:
    policies = session.scalars(select(Policy).order_by(Policy.name))
    return [policy_to_dict(session, policy) for policy in policies]
