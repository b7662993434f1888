"""Enrollment (token → agent id + secret) and the per-request agent authentication."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Engine, Table, bindparam, or_, select, update
from sqlalchemy.orm import Session

from models import Endpoint, EnrollmentToken
from models.base import utcnow
from patchflow import crypto
from patchflow.errors import UserError
from patchflow.fleet.errors import Forbidden, Unauthorized
from patchflow.fleet.network import Network, is_roaming
from patchflow.inventory import normalize_hostname

# last_seen is rewritten at most this often from polls: at 50,000 agents polling every minute,
# writing it on every poll would be ~800 writes/s for a column nobody reads to the second.
TOUCH_INTERVAL = dt.timedelta(minutes=5)
_DUMMY_HASH = crypto.hash_token("no agent has this secret")
_ENDPOINTS = cast(Table, Endpoint.__table__)
# Built once: these run on every poll from every agent.
_CREDENTIALS = select(
    _ENDPOINTS.c.id, _ENDPOINTS.c.hostname, _ENDPOINTS.c.secret_hash, _ENDPOINTS.c.revoked,
    _ENDPOINTS.c.last_seen, _ENDPOINTS.c.last_ip,
).where(_ENDPOINTS.c.agent_id == bindparam("agent"))
_TOUCH = update(_ENDPOINTS).where(_ENDPOINTS.c.id == bindparam("endpoint"))


@dataclass(frozen=True)
class Enrollment:
    agent_id: str
    secret: str
    endpoint_id: int
    hostname: str


def _consume_token(session: Session, token: str) -> EnrollmentToken:
    row = session.scalar(
        select(EnrollmentToken).where(EnrollmentToken.token_hash == crypto.hash_token(token))
    )
    if row is None:
        raise Unauthorized("unknown enrollment token")
    if row.revoked:
        raise Forbidden("enrollment token revoked")
    if row.expires_at is not None and row.expires_at <= utcnow():
        raise Forbidden("enrollment token expired")
    # One conditional UPDATE: two agents racing for the last use cannot both win.
    result = session.execute(
        update(EnrollmentToken)
        .where(
            EnrollmentToken.id == row.id,
            or_(EnrollmentToken.uses_left.is_(None), EnrollmentToken.uses_left > 0),
        )
        .values(uses=EnrollmentToken.uses + 1, uses_left=EnrollmentToken.uses_left - 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise Forbidden("enrollment token used up")
    return row


def enroll(
    session: Session,
    token: str,
    hostname: str,
    domain: str | None = None,
    ip: str | None = None,
    networks: Sequence[Network] = (),
) -> Enrollment:
    """Trade an enrollment token for an agent identity. Enrolling a known host name (a reinstalled
    agent, an endpoint imported agentless) takes that endpoint over with a fresh secret; the old
    secret stops working at once."""
    try:
        hostname = normalize_hostname(hostname)
    except ValueError as exc:
        raise UserError(f"hostname: {exc}") from None
    token_row = _consume_token(session, token)
    secret = crypto.new_token()
    agent_id = str(uuid.uuid4())
    now = utcnow()
    endpoint = session.scalar(select(Endpoint).where(Endpoint.hostname == hostname))
    if endpoint is None:
        endpoint = Endpoint(hostname=hostname, revoked=False, hotpatch=False,
                            pending_reboot=False, roaming=False, scan_state="Not Scanned")
        session.add(endpoint)
    endpoint.domain = domain or endpoint.domain
    endpoint.agent_id = agent_id
    endpoint.secret_hash = crypto.hash_token(secret)
    endpoint.revoked = False
    endpoint.enrolled_at = now
    endpoint.last_seen = now
    endpoint.last_ip = ip
    endpoint.roaming = is_roaming(ip, networks)
    if token_row.group_id is not None:
        endpoint.group_id = token_row.group_id
    session.flush()
    return Enrollment(agent_id, secret, endpoint.id, hostname)


@dataclass(frozen=True)
class AgentIdentity:
    endpoint_id: int
    hostname: str


def authenticate_agent(
    engine: Engine,
    agent_id: str | None,
    secret: str | None,
    ip: str | None = None,
    networks: Sequence[Network] = (),
) -> AgentIdentity:
    """Check an agent's credentials and note that it was seen; runs on every agent request.

    The secret is compared as a hash with hmac.compare_digest, and an unknown agent id still pays
    for one comparison, so timing tells an attacker nothing about which part was wrong.
    """
    if not agent_id or not secret or len(agent_id) > 64:
        raise Unauthorized("missing or malformed agent credentials (X-Agent-Id, Bearer secret)")
    with engine.connect() as conn:
        row = conn.execute(_CREDENTIALS, {"agent": agent_id}).first()
        stored = row.secret_hash if row is not None and row.secret_hash else _DUMMY_HASH
        if not crypto.token_matches(secret, stored) or row is None:
            raise Unauthorized("invalid agent credentials")
        if row.revoked:
            raise Forbidden("agent revoked: re-enroll with a new token")
        now = utcnow()
        if row.last_seen is None or now - row.last_seen > TOUCH_INTERVAL or row.last_ip != ip:
            conn.execute(_TOUCH, {"endpoint": row.id, "last_seen": now, "last_ip": ip,
                                  "roaming": is_roaming(ip, networks)})
            conn.commit()
    return AgentIdentity(row.id, row.hostname)
