"""Console sessions and CSRF tokens: signed cookies, a per-home secret, a logout list.

A session is a signed cookie (HMAC-SHA256 over a small JSON payload: user, session id, issue
and expiry times) rather than a row per login, so a page view costs no write and several worker
processes share sessions without coordination. The signing key is `console.key` in
PATCHFLOW_HOME (mode 0600), apart from the database: a leaked dump cannot forge a session.
Logging out puts the session id on a short revocation list in the `settings` table until the
cookie would have expired anyway, so a copied cookie dies with the logout.

CSRF tokens are derived from the session id (HMAC with a distinct label), so they need no
storage either; the login form, which has no session yet, is bound to a random pre-session
cookie the same way.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from models import Setting
from models.base import utcnow
from patchflow import config

KEY_NAME = "console.key"
SESSION_COOKIE = "patchflow_console"
LOGIN_COOKIE = "patchflow_login"
FLASH_COOKIE = "patchflow_flash"
COOKIE_PATH = "/console"
DEFAULT_SESSION_HOURS = 8
LOGOUT_PREFIX = "console.logout."

_keys: dict[Path, bytes] = {}
_lock = threading.Lock()


def secret_key() -> bytes:
    """The home's console signing key, created on first use and then cached per home."""
    path = config.home() / KEY_NAME
    with _lock:
        key = _keys.get(path)
        if key is not None:
            return key
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another worker process created it first: read theirs
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(secrets.token_hex(32).encode())
        key = bytes.fromhex(path.read_text(encoding="ascii").strip())
        if len(key) < 32:
            raise RuntimeError(f"{path} holds a key shorter than 32 bytes")
        _keys[path] = key
        return key


def session_hours() -> float:
    """`[console] session_hours` in patchflow.toml (default 8): how long a login lasts."""
    value = config.setting("console", "session_hours", DEFAULT_SESSION_HOURS)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 720:
        raise config.ConfigError(
            f"[console] session_hours must be a number of hours from 0 to 720, not {value!r}")
    return float(value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(label: str, data: str) -> str:
    return _b64(hmac.new(secret_key(), f"{label}\n{data}".encode(), hashlib.sha256).digest())


def sign(label: str, payload: dict[str, Any]) -> str:
    body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
    return f"{body}.{_mac(label, body)}"


def unsign(label: str, value: str | None) -> dict[str, Any] | None:
    """The payload of a value `sign(label, ...)` made, or None for anything else."""
    if not value or value.count(".") != 1:
        return None
    body, mac = value.split(".")
    if not hmac.compare_digest(mac, _mac(label, body)):
        return None
    try:
        payload = json.loads(_unb64(body))
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


@dataclass(frozen=True)
class ConsoleSession:
    username: str
    sid: str
    expires: dt.datetime
    # The user's session epoch when the session was opened (patchflow.ops.accounts): a
    # password change or the user's removal makes it stale, and the session with it.
    epoch: str = ""

    @property
    def csrf_token(self) -> str:
        return _mac("csrf", self.sid)


def new_session(username: str, epoch: str,
                now: dt.datetime | None = None) -> tuple[ConsoleSession, str]:
    """A fresh session of a user whose session epoch is `epoch`, and its cookie value."""
    now = now or utcnow()
    expires = now + dt.timedelta(hours=session_hours())
    session = ConsoleSession(username, secrets.token_urlsafe(16), expires, epoch)
    cookie = sign("session", {"u": username, "sid": session.sid, "ep": epoch,
                              "iat": int(now.timestamp()), "exp": int(expires.timestamp())})
    return session, cookie


def read_session(cookie: str | None, now: dt.datetime | None = None) -> ConsoleSession | None:
    """The session a cookie carries if its signature holds and it has not expired. Whether the
    user still exists with the same epoch and the session was not logged out is checked against
    the database (`is_current`, `is_logged_out`)."""
    payload = unsign("session", cookie)
    if payload is None:
        return None
    try:
        username, sid, exp = str(payload["u"]), str(payload["sid"]), int(payload["exp"])
        epoch = str(payload["ep"])
    except (KeyError, TypeError, ValueError):
        return None  # a cookie from before session epochs: log in again
    expires = dt.datetime.fromtimestamp(exp, dt.UTC)
    if expires <= (now or utcnow()):
        return None
    return ConsoleSession(username, sid, expires, epoch)


def is_current(session: ConsoleSession, user_epoch: str | None) -> bool:
    """True when the session's user still exists with the epoch the session was opened in."""
    if not user_epoch:
        return False
    return hmac.compare_digest(session.epoch.encode(), user_epoch.encode())


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


def login_nonce() -> tuple[str, str]:
    """(cookie value, form token) binding a login form to the browser that fetched it."""
    nonce = secrets.token_urlsafe(16)
    return nonce, _mac("login", nonce)


def login_token_ok(cookie: str | None, given: str | None) -> bool:
    return bool(cookie) and csrf_ok(_mac("login", str(cookie)), given)


def is_logged_out(db: Session, sid: str) -> bool:
    return db.get(Setting, LOGOUT_PREFIX + sid) is not None


def revoke(db: Session, session: ConsoleSession) -> None:
    """Remember a logged-out session until it would have expired; forget expired entries."""
    now = utcnow()
    stale = []
    for key, value in db.execute(
        select(Setting.key, Setting.value).where(Setting.key.like(LOGOUT_PREFIX + "%"))
    ):
        try:
            if dt.datetime.fromisoformat(value or "") <= now:
                stale.append(key)
        except ValueError:
            stale.append(key)
    if stale:
        db.execute(delete(Setting).where(Setting.key.in_(stale)))
    if db.get(Setting, LOGOUT_PREFIX + session.sid) is None:
        db.add(Setting(key=LOGOUT_PREFIX + session.sid, value=session.expires.isoformat()))
    db.flush()


def cookie_options(max_age: int | None = None) -> dict[str, Any]:
    """Every console cookie: HTTPS only, invisible to scripts, never sent cross-site."""
    return {"path": COOKIE_PATH, "secure": True, "httponly": True, "samesite": "strict",
            "max_age": max_age}
