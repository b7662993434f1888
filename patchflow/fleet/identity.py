"""Re-enrolment of a host name that already exists: what a pending one is, and the
administrator's approval or rejection of it.

A pending re-enrolment is an `endpoints` row holding the new agent's credentials under an
internal name that can never be a host name (it starts with `~`), so every lookup by host name
finds the existing endpoint and only it. It holds no inventory (the agent API refuses uploads
from it), so nothing scans, counts, reports or installs on it. Approval moves the new agent's
credentials onto the existing row, which keeps its id, name, group, inventory and history
(scans, install jobs) until the agent's next upload; the pending row is then deleted.
Rejection deletes the pending row, and its agent's credentials stop working.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Endpoint
from patchflow.errors import NotFoundError
from patchflow.fleet.endpoints import get_endpoint, pending_for
from patchflow.fleet.errors import Conflict

PENDING_PREFIX = "~reenroll:"

# What an approved re-enrolment brings to the endpoint it replaces: the new agent's identity and
# where it was seen. The OS fields come with the agent's next inventory.
_AGENT_FIELDS = ("agent_id", "secret_hash", "enrolled_at", "last_seen", "last_ip", "roaming",
                 "reported_hostname")


def pending_name(agent_id: str) -> str:
    """The stored name of a pending re-enrolment: unique (the agent id) and never a valid host
    name, so `hostname == X` lookups cannot match it."""
    return PENDING_PREFIX + agent_id


def _pending_or_fail(session: Session, hostname: str) -> tuple[Endpoint, Endpoint]:
    endpoint = get_endpoint(session, hostname)
    pending = pending_for(session, endpoint)
    if pending is None:
        raise NotFoundError(f"no re-enrolment of {endpoint.hostname} is waiting for approval")
    return endpoint, pending


def approve_reenrollment(session: Session, hostname: str, unrevoke: bool = False) -> Endpoint:
    """The pending agent becomes the endpoint's agent; the previous agent's secret stops working.

    A revoked endpoint stays revoked unless `unrevoke` says so: approving a replacement must not
    quietly undo a revocation.
    """
    endpoint, pending = _pending_or_fail(session, hostname)
    if endpoint.revoked and not unrevoke:
        raise Conflict(
            f"{endpoint.hostname} is revoked: approving its re-enrolment would bring it back; "
            "approve with --unrevoke (API: \"unrevoke\": true) to do that on purpose"
        )
    carried: dict[str, Any] = {name: getattr(pending, name) for name in _AGENT_FIELDS}
    if pending.domain:
        carried["domain"] = pending.domain
    # The pending row goes first: agent_id is unique, and the endpoint takes the same value.
    session.delete(pending)
    session.flush()
    for name, value in carried.items():
        setattr(endpoint, name, value)
    endpoint.revoked = False
    session.flush()
    return endpoint


def reject_reenrollment(session: Session, hostname: str) -> str:
    """Delete the pending re-enrolment; the endpoint is left exactly as it was. Returns the
    endpoint's name."""
    endpoint, pending = _pending_or_fail(session, hostname)
    session.delete(pending)
    session.flush()
    return endpoint.hostname


def approve_all_reenrollments(session: Session) -> tuple[list[str], list[str]]:
    """Approve every pending re-enrolment of an endpoint that is not revoked (a certificate
    change or a reimaged floor re-enrols many agents at once). Returns (approved, skipped
    because revoked): a revocation is lifted only one endpoint at a time, on purpose."""
    rows = session.execute(
        select(Endpoint.hostname, Endpoint.revoked)
        .where(Endpoint.id.in_(select(Endpoint.replaces_endpoint_id)
                               .where(Endpoint.replaces_endpoint_id.is_not(None))))
        .order_by(Endpoint.hostname)
    ).all()
    approved = [approve_reenrollment(session, name).hostname for name, revoked in rows
                if not revoked]
    return approved, [name for name, revoked in rows if revoked]
