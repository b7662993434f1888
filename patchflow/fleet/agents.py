"""Enrollment (token → agent id + secret) and the per-request agent authentication."""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Engine, Table, bindparam, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import Endpoint, EnrollmentToken
from models.base import utcnow
from patchflow import crypto
from patchflow.errors import UserError
from patchflow.fleet.agent_cache import CACHE_SECONDS, CachedAgent, agents_of, digest_fresh
from patchflow.fleet.endpoints import pending_for
from patchflow.fleet.errors import Conflict, Forbidden, Unauthorized
from patchflow.fleet.identity import pending_name
from patchflow.fleet.inventory import normalize_hostname
from patchflow.fleet.network import Network, is_roaming

# last_seen is rewritten at most this often from polls: at 50,000 agents polling every minute,
# writing it on every poll would be ~800 writes/s for a column nobody reads to the second.
TOUCH_INTERVAL = dt.timedelta(minutes=5)
_DUMMY_HASH = crypto.hash_token("no agent has this secret")
_ENDPOINTS = cast(Table, Endpoint.__table__)
# Built once: these run on every poll from every agent.
_CREDENTIALS = select(
    _ENDPOINTS.c.id, _ENDPOINTS.c.hostname, _ENDPOINTS.c.secret_hash, _ENDPOINTS.c.revoked,
    _ENDPOINTS.c.last_seen, _ENDPOINTS.c.last_ip, _ENDPOINTS.c.replaces_endpoint_id,
    _ENDPOINTS.c.inventory_sha256, _ENDPOINTS.c.inventory_at, _ENDPOINTS.c.reported_hostname,
).where(_ENDPOINTS.c.agent_id == bindparam("agent"))
_TOUCH = update(_ENDPOINTS).where(_ENDPOINTS.c.id == bindparam("endpoint"))


@dataclass(frozen=True)
class Enrollment:
    agent_id: str
    secret: str
    endpoint_id: int
    hostname: str
    pending: bool = False  # a re-enrolment of an existing host name, waiting for an admin


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
    """Trade an enrollment token for an agent identity.

    An endpoint's identity is its agent credential, not its name: enrolling a host name that
    already exists (a reinstalled machine, an endpoint imported agentless, or someone holding a
    token and a guess) never touches that endpoint. The new agent gets a separate row pending
    re-enrolment, which is not scanned, counted or offered installs until an administrator
    approves it (`approve_reenrollment`) or rejects it. One may be pending per endpoint.
    """
    try:
        hostname = normalize_hostname(hostname)
    except ValueError as exc:
        raise UserError(f"hostname: {exc}") from None
    token_row = _consume_token(session, token)
    secret = crypto.new_token()
    agent_id = str(uuid.uuid4())
    now = utcnow()
    existing = session.scalar(select(Endpoint).where(Endpoint.hostname == hostname))
    endpoint = Endpoint(
        hostname=hostname, domain=domain, agent_id=agent_id,
        secret_hash=crypto.hash_token(secret), revoked=False, enrolled_at=now, last_seen=now,
        last_ip=ip, roaming=is_roaming(ip, networks), hotpatch=False, pending_reboot=False,
        scan_state="Not Scanned", reported_hostname=hostname,
        group_id=token_row.group_id,
    )
    if existing is not None:
        _refuse_second_pending(session, existing)
        # No group until approved: the token's group must not pull the name into it either.
        endpoint.hostname = pending_name(agent_id)
        endpoint.group_id = None
        endpoint.replaces_endpoint_id = existing.id
    session.add(endpoint)
    try:
        session.flush()
    except IntegrityError:
        # Two enrolments of one new name (or of one existing endpoint) racing: the unique
        # indexes let one win; the other is told so, and its token use rolls back with it.
        raise Conflict(f"{hostname} is being enrolled by another agent right now") from None
    return Enrollment(agent_id, secret, endpoint.id, hostname, pending=existing is not None)


def _refuse_second_pending(session: Session, existing: Endpoint) -> None:
    if pending_for(session, existing) is not None:
        raise Conflict(
            f"a re-enrolment of {existing.hostname} is already waiting for approval: an "
            "administrator must approve or reject it first"
        )


@dataclass(frozen=True)
class AgentIdentity:
    endpoint_id: int
    hostname: str
    pending: bool = False  # enrolled as a re-enrolment not approved yet


def _check(agent_id: str | None, secret: str | None) -> str:
    if not agent_id or not secret or len(agent_id) > 64:
        raise Unauthorized("missing or malformed agent credentials (X-Agent-Id, Bearer secret)")
    return agent_id


def _verified(entry: CachedAgent | None, secret: str) -> CachedAgent:
    stored = entry.secret_hash if entry is not None and entry.secret_hash else _DUMMY_HASH
    if not crypto.token_matches(secret, stored) or entry is None:
        raise Unauthorized("invalid agent credentials")
    if entry.revoked:
        raise Forbidden("agent revoked: re-enroll with a new token")
    return entry


def _touch_due(entry: CachedAgent, ip: str | None, now: dt.datetime) -> bool:
    return entry.last_seen is None or now - entry.last_seen > TOUCH_INTERVAL or entry.last_ip != ip


def agent_identity(entry: CachedAgent) -> AgentIdentity:
    """Who a cached agent is, as `authenticate_agent` answers it."""
    return AgentIdentity(entry.endpoint_id, entry.hostname, entry.pending)


def cached_agent(engine: Engine, agent_id: str | None, secret: str | None,
                 ip: str | None = None) -> CachedAgent | None:
    """The agent from memory, when that alone answers: credentials cached, secret right, not
    revoked, no last_seen write due. None means "ask `authenticate_agent`" (it never queries;
    server.agent_fast_path calls it on the event loop, before routing)."""
    if not agent_id or not secret or len(agent_id) > 64:
        return None
    entry = agents_of(engine).get(agent_id)
    if (entry is None or entry.revoked or _touch_due(entry, ip, utcnow())
            or not crypto.token_matches(secret, entry.secret_hash or _DUMMY_HASH)):
        return None
    return entry


def load_agent(engine: Engine, agent_id: str, digest: str | None = None) -> CachedAgent | None:
    """The credentials row, from memory or one indexed query (kept until credentials change
    anywhere; see agent_cache).

    `digest`: the caller will answer "unchanged" if the stored inventory's digest is this one,
    so an entry naming it that was read more than CACHE_SECONDS ago is read again (another
    worker may have stored a newer inventory since). An entry naming another digest is not: the
    upload is then stored, which is right whatever another worker stored meanwhile, and a
    changed upload costs no query."""
    cache = agents_of(engine)
    cache.confirm(engine)
    entry = cache.get(agent_id)
    if entry is not None and (digest is None or entry.inventory_sha256 != digest
                              or digest_fresh(entry)):
        return entry
    epoch = cache.epoch
    with engine.connect() as conn:
        row = conn.execute(_CREDENTIALS, {"agent": agent_id}).first()
    if row is None:
        return None
    entry = CachedAgent(
        endpoint_id=row.id, hostname=row.hostname, secret_hash=row.secret_hash or "",
        revoked=bool(row.revoked), pending=row.replaces_endpoint_id is not None,
        last_seen=row.last_seen, last_ip=row.last_ip, inventory_sha256=row.inventory_sha256,
        inventory_at=row.inventory_at, reported_hostname=row.reported_hostname,
        # Aged by a random part of CACHE_SECONDS: agents that started together do not all
        # re-read their digest at the same instant (a burst of queries is the p99 tail).
        loaded=time.monotonic() - random.uniform(0, CACHE_SECONDS / 2))
    cache.put(agent_id, entry, epoch)
    return entry


def authenticate_agent(
    engine: Engine,
    agent_id: str | None,
    secret: str | None,
    ip: str | None = None,
    networks: Sequence[Network] = (),
) -> AgentIdentity:
    """Check an agent's credentials and note that it was seen; runs on every agent request.

    The secret is compared as a hash with hmac.compare_digest on every request, cached or not,
    and an unknown agent id still pays for one comparison, so timing tells an attacker nothing
    about which part was wrong. The row comes from the in-process cache (agent_cache): a
    revocation made in this process applies at once, one made elsewhere (the CLI, another
    worker) within CACHE_SECONDS.
    """
    agent_id = _check(agent_id, secret)
    assert secret is not None
    entry = _verified(load_agent(engine, agent_id), secret)
    now = utcnow()
    if _touch_due(entry, ip, now):
        with engine.begin() as conn:
            conn.execute(_TOUCH, {"endpoint": entry.endpoint_id, "last_seen": now,
                                  "last_ip": ip, "roaming": is_roaming(ip, networks)})
        agents_of(engine).update(agent_id, last_seen=now, last_ip=ip)
    return agent_identity(entry)
