"""Enrollment tokens (what an agent trades for its identity) and admin API tokens. Only hashes
are stored; the token itself is shown once when created."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from models import ApiToken, EnrollmentToken, Group
from models.base import utcnow
from patchflow import crypto
from patchflow.errors import NotFoundError, UserError
from patchflow.fleet.errors import Forbidden, Unauthorized
from patchflow.fleet.groups import group_by_name

_DURATION = re.compile(r"^(\d+)\s*([mhdw])$")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# Shown as is in the API schema (server/admin_api.py).
NAME_PATTERN = r"^\w[\w .()&/+-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)


def validate_name(name: str, what: str) -> str:
    """Names of groups, policies and tokens: printable, no leading space, fit the column."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UserError(
            f"invalid {what} name {name!r}: 1-128 letters, digits, spaces or . _ - ( ) & / +"
        )
    return name


def parse_duration(text: str | None) -> dt.timedelta | None:
    """'30m', '12h', '7d', '2w'; 'never' means no expiry."""
    if text is None or text.strip().lower() == "never":
        return None
    match = _DURATION.match(text.strip().lower())
    if not match or int(match.group(1)) <= 0:
        raise UserError(f"invalid duration {text!r}: use e.g. 30m, 12h, 7d, 2w or never")
    try:
        delta = dt.timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        delta = dt.timedelta.max
    if delta > dt.timedelta(days=3650):
        raise UserError(f"invalid duration {text!r}: at most ten years")
    return delta


def create_enrollment_token(
    session: Session,
    group: str | None = None,
    expires: str | None = "7d",
    uses: int | None = None,
) -> tuple[str, EnrollmentToken]:
    """Returns the token itself (shown once, never stored) and its stored record."""
    group_id = group_by_name(session, group).id if group else None
    if uses is not None and (isinstance(uses, bool) or not isinstance(uses, int)
                             or not 1 <= uses <= 1_000_000):
        raise UserError("--uses must be between 1 and 1000000")
    lifetime = parse_duration(expires)
    token = "pfe_" + crypto.new_token()
    row = EnrollmentToken(
        token_hash=crypto.hash_token(token),
        group_id=group_id,
        expires_at=utcnow() + lifetime if lifetime else None,
        uses_left=uses,
        uses=0,
        revoked=False,
        created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    return token, row


def enrollment_token_to_dict(session: Session, row: EnrollmentToken) -> dict[str, Any]:
    group = session.get(Group, row.group_id) if row.group_id else None
    now = utcnow()
    if row.revoked:
        state = "revoked"
    elif row.expires_at is not None and row.expires_at <= now:
        state = "expired"
    elif row.uses_left is not None and row.uses_left <= 0:
        state = "used up"
    else:
        state = "active"
    return {
        "id": row.id,
        "group": group.name if group else None,
        "created_at": row.created_at.isoformat() if row.created_at else None,
        "expires_at": row.expires_at.isoformat() if row.expires_at else None,
        "uses": row.uses,
        "uses_left": row.uses_left,
        "state": state,
    }


def list_enrollment_tokens(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(EnrollmentToken).order_by(EnrollmentToken.id))
    return [enrollment_token_to_dict(session, row) for row in rows]


def revoke_enrollment_token(session: Session, token_id: int) -> None:
    row = session.get(EnrollmentToken, token_id)
    if row is None:
        raise NotFoundError(f"no enrollment token with id {token_id}")
    row.revoked = True
    session.flush()


def create_admin_token(session: Session, name: str = "admin") -> str:
    validate_name(name, "token")
    token = "pfa_" + crypto.new_token()
    session.add(ApiToken(kind="admin", name=name, token_hash=crypto.hash_token(token),
                         revoked=False, created_at=utcnow()))
    session.flush()
    return token


def list_admin_tokens(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(ApiToken).where(ApiToken.kind == "admin").order_by(ApiToken.id))
    return [
        {"id": r.id, "name": r.name, "created_at": r.created_at.isoformat(), "revoked": r.revoked}
        for r in rows
    ]


def revoke_admin_token(session: Session, token_id: int) -> None:
    row = session.get(ApiToken, token_id)
    if row is None or row.kind != "admin":
        raise NotFoundError(f"no admin token with id {token_id}")
    row.revoked = True
    session.flush()


def admin_token_name(engine: Engine, token: str) -> str:
    """The name of a valid admin token; the lookup is by hash, so the token's bits never meet a
    comparison that could leak timing."""
    with engine.connect() as conn:
        row = conn.execute(
            select(ApiToken.name, ApiToken.revoked).where(
                ApiToken.token_hash == crypto.hash_token(token), ApiToken.kind == "admin"
            )
        ).first()
    if row is None:
        raise Unauthorized("invalid admin token")
    if row.revoked:
        raise Forbidden("admin token revoked")
    return str(row.name)
