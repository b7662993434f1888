"""Secrets at rest: reversible encryption for credentials we must replay (proxy, SMTP), and
one-way hashes for credentials we only verify (agent secrets, API tokens, admin passwords).

The encryption key lives in PATCHFLOW_HOME/secret.key (mode 0600), apart from the database, so a
leaked database dump alone does not reveal proxy or SMTP passwords.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from patchflow import config

KEY_NAME = "secret.key"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class SecretError(Exception):
    """An encrypted value cannot be read back (wrong or missing key)."""


def _key_path() -> Path:
    return config.home() / KEY_NAME


def _fernet(create: bool = True) -> Fernet:
    path = _key_path()
    if not path.exists():
        if not create:
            raise SecretError(f"{path} is missing: encrypted settings cannot be read")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(create=False).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretError("an encrypted setting does not match this home's secret.key") from None


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so a fast hash is enough: no dictionary to attack."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


def hash_password(password: str) -> str:
    """Passwords are low-entropy, so they get a slow salted hash (scrypt)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    salt = base64.b64decode(salt_b64)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return hmac.compare_digest(digest, base64.b64decode(digest_b64))
