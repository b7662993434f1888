"""Console administrators: add, list, remove, change a password, check a login. The web console
(server/console/) and the CLI (`patchflow admin add|passwd|list|remove`, the demo) both manage
them through here.

Passwords are kept only as a slow salted hash (Argon2id, patchflow.crypto); a hash made by an
older version (scrypt) still logs in and is replaced by an Argon2id one at that login. A login
for a user that does not exist still pays for one hash, so the response time does not tell an
attacker which user names exist.

Each administrator has a session epoch the console signs into their cookies
(server/console/security.py): a password change draws a new one, so every session opened with
the old password ends; a removed administrator's sessions end with the row, and one added
again under the same name gets a new epoch, never the old sessions.
"""

from __future__ import annotations

import re
import secrets
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
                     created_at=utcnow(), session_epoch=new_epoch())
    session.add(user)
    session.flush()
    return user


def get_admin(session: Session, username: str) -> AdminUser:
    user = session.scalar(select(AdminUser).where(AdminUser.username == username))
    if user is None:
        raise NotFoundError(f"no administrator named {username!r}")
    return user


def new_epoch() -> str:
    return secrets.token_hex(16)


def set_password(session: Session, username: str, password: str) -> AdminUser:
    """A new password ends every console session of the user, wherever it was opened."""
    validate_password(password)
    user = get_admin(session, username)
    user.password_hash = crypto.hash_password(password)
    user.session_epoch = new_epoch()
    session.flush()
    return user


def remove_admin(session: Session, username: str) -> None:
    """Console sessions of the user end at their next request, for good: the epoch they carry
    goes with the row, and no later user of the same name gets it back."""
    session.delete(get_admin(session, username))
    session.flush()


def session_epoch(session: Session, username: str) -> str | None:
    """The epoch a live session of the user must carry; None when there is no such user."""
    return session.scalar(select(AdminUser.session_epoch)
                          .where(AdminUser.username == username))


def list_admins(session: Session) -> list[dict[str, Any]]:
    return [{"username": u.username, "created_at": u.created_at.isoformat()}
            for u in session.scalars(select(AdminUser).order_by(AdminUser.username))]


def login(session: Session, username: str, password: str) -> str | None:
    """The user's session epoch when the user exists and the password matches, else None;
    always costs one password hash. A hash older than today's scheme is replaced here, the
    one moment the plain password is known."""
    user = session.scalar(select(AdminUser).where(AdminUser.username == (username or "")[:128]))
    if user is None or len(password) > MAX_PASSWORD:
        crypto.verify_password(password[:MAX_PASSWORD], _dummy_hash())
        return None
    if not crypto.verify_password(password, user.password_hash):
        return None
    if crypto.password_needs_rehash(user.password_hash):
        user.password_hash = crypto.hash_password(password)
    if not user.session_epoch:
        user.session_epoch = new_epoch()
    session.flush()
    return user.session_epoch


def check_login(session: Session, username: str, password: str) -> bool:
    """True when the user exists and the password matches (see login)."""
    return login(session, username, password) is not None


def exists(session: Session, username: str) -> bool:
    return session.scalar(select(AdminUser.id).where(AdminUser.username == username)) is not None
