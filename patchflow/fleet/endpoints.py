"""Endpoint listing and the admin's actions on one endpoint (move, revoke)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from models import Endpoint, InstalledProgram, InstalledUpdate
from patchflow.errors import NotFoundError
from patchflow.fleet.groups import descendant_ids, group_by_name
from patchflow.fleet.inventory import normalize_hostname
from patchflow.fleet.tree import Tree, policy_names


def get_endpoint(session: Session, hostname: str) -> Endpoint:
    try:
        key = normalize_hostname(hostname)
    except ValueError:
        raise NotFoundError(f"no endpoint named {hostname!r}") from None
    endpoint = session.scalar(select(Endpoint).where(Endpoint.hostname == key))
    if endpoint is None:
        raise NotFoundError(f"no endpoint named {hostname!r}")
    return endpoint


def pending_for(session: Session, endpoint: Endpoint) -> Endpoint | None:
    """The re-enrolment waiting to replace `endpoint`'s agent, if any (one at most: the column
    is unique)."""
    return session.scalar(select(Endpoint).where(Endpoint.replaces_endpoint_id == endpoint.id))


def move_endpoint(session: Session, hostname: str, group: str) -> Endpoint:
    endpoint = get_endpoint(session, hostname)
    endpoint.group_id = group_by_name(session, group).id
    session.flush()
    return endpoint


def revoke_endpoint(session: Session, hostname: str) -> Endpoint:
    """Cut the agent off at once: its next request is refused (403). The inventory stays."""
    endpoint = get_endpoint(session, hostname)
    endpoint.revoked = True
    session.flush()
    return endpoint


def list_endpoints(session: Session, group: str | None = None) -> list[dict[str, Any]]:
    """One row per endpoint; `group` includes its subgroups. Counts come from two grouped
    queries rather than one per endpoint, which matters at tens of thousands of rows.

    A re-enrolment waiting for approval is listed right after the endpoint it would replace,
    under that endpoint's name with `pending_reenrollment` true (in a group listing too, though
    it joins no group until approved)."""
    query = select(Endpoint)
    if group:
        ids = descendant_ids(session, group_by_name(session, group).id)
        member = aliased(Endpoint)
        query = query.where(or_(
            Endpoint.group_id.in_(ids),
            Endpoint.replaces_endpoint_id.in_(select(member.id).where(member.group_id.in_(ids))),
        ))
    return _rows(session, list(session.scalars(query)), whole_table=True)


def describe_endpoint(session: Session, hostname: str) -> list[dict[str, Any]]:
    """The endpoint's listing row, followed by its pending re-enrolment's row if one waits."""
    endpoint = get_endpoint(session, hostname)
    pending = pending_for(session, endpoint)
    return _rows(session, [endpoint] if pending is None else [endpoint, pending],
                 whole_table=False)


def _counts(session: Session, column: Any, ids: list[int] | None) -> dict[int, int]:
    query = select(column, func.count()).group_by(column)
    if ids is not None:
        query = query.where(column.in_(ids))
    return dict(session.execute(query).tuples().all())


def _rows(session: Session, endpoints: list[Endpoint], whole_table: bool) -> list[dict[str, Any]]:
    tree = Tree.load(session)
    policies = policy_names(session)
    names = {e.id: e.hostname for e in endpoints if e.replaces_endpoint_id is None}
    ids = None if whole_table else [e.id for e in endpoints]
    program_counts = _counts(session, InstalledProgram.endpoint_id, ids)
    kb_counts = _counts(session, InstalledUpdate.endpoint_id, ids)
    rows = []
    for e in endpoints:
        pending = e.replaces_endpoint_id is not None
        policy_id = tree.effective_policy(e.group_id)
        build = None
        if e.os_build is not None:
            # UBR unknown (an inventory without it) is shown as unknown, never as ".0".
            build = f"{e.os_build}.{e.os_ubr}" if e.os_ubr is not None else f"{e.os_build}"
        rows.append({
            "hostname": names.get(e.replaces_endpoint_id or 0, "?") if pending else e.hostname,
            "domain": e.domain,
            "group": tree.path(e.group_id) if e.group_id else None,
            "policy": policies.get(policy_id) if policy_id else None,
            "os_name": e.os_name,
            "display_version": e.os_display_version,
            "build": build,
            "arch": e.os_arch,
            "last_seen": e.last_seen.isoformat() if e.last_seen else None,
            "scan_state": e.scan_state,
            "programs": program_counts.get(e.id, 0),
            "kbs": kb_counts.get(e.id, 0),
            "roaming": e.roaming,
            "pending_reboot": e.pending_reboot,
            "enrolled": e.agent_id is not None,
            "revoked": e.revoked,
            "reported_hostname": e.reported_hostname,
            "pending_reenrollment": pending,
            "enrolled_at": e.enrolled_at.isoformat() if e.enrolled_at else None,
            "last_ip": e.last_ip,
        })
    rows.sort(key=lambda r: (r["hostname"], r["pending_reenrollment"]))
    return rows
