"""Console administrators: add, list, remove, change a password, check a login.

Passwords are kept only as a slow salted hash (scrypt, patchflow.crypto). A login for a user
that does not exist still pays for one hash, so the response time does not tell an attacker
which user names exist.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import AdminUser
from models.base import utcnow
from patchflow import crypto
from patchflow.errors import NotFoundError, UserError

MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")


@cache
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist (made once, on first need)."""
    return crypto.hash_password("patchflow-no-such-user")


def validate_username(username: str) -> str:
    if not _USERNAME.match(username or ""):
        raise UserError(f"invalid user name {username!r}: 1-128 letters, digits, '.', '_', '@' "
                        "or '-', starting with a letter or digit")
    return username


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password is too short: use at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password is too long: at most {MAX_PASSWORD} characters")
    if password.strip() != password:
        raise UserError("the password starts or ends with white space (a stray newline?)")
    return password


def add_admin(session: Session, username: str, password: str) -> AdminUser:
    validate_username(username)
    validate_password(password)
    if session.scalar(select(AdminUser.id).where(AdminUser.username == username)) is not None:
        raise UserError(f"an administrator named {username!r} already exists "
                        "(`patchflow admin passwd` changes the password)")
    user = AdminUser(username=username, password_hash=crypto.hash_password(password),
                     created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def get_admin(session: Session, username: str) -> AdminUser:
    user = session.scalar(select(AdminUser).where(AdminUser.username == username))
    if user is None:
        raise NotFoundError(f"no administrator named {username!r}")
    return user


def set_password(session: Session, username: str, password: str) -> AdminUser:
    validate_password(password)
    user = get_admin(session, username)
    user.password_hash = crypto.hash_password(password)
    session.flush()
    return user


def remove_admin(session: Session, username: str) -> None:
    """Existing console sessions of the user end at their next request (the user is gone)."""
    session.delete(get_admin(session, username))
    session.flush()


def list_admins(session: Session) -> list[dict[str, Any]]:
    return [{"username": u.username, "created_at": u.created_at.isoformat()}
            for u in session.scalars(select(AdminUser).order_by(AdminUser.username))]


def check_login(session: Session, username: str, password: str) -> bool:
    """True when the user exists and the password matches; always costs one scrypt."""
    user = session.scalar(select(AdminUser).where(AdminUser.username == (username or "")[:128]))
    if user is None or len(password) > MAX_PASSWORD:
        crypto.verify_password(password[:MAX_PASSWORD], _dummy_hash())
        return False
    return crypto.verify_password(password, user.password_hash)


def exists(session: Session, username: str) -> bool:
    return session.scalar(select(AdminUser.id).where(AdminUser.username == username)) is not None
