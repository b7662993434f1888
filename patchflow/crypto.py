"""Secrets at rest: reversible encryption for credentials we must replay (proxy, SMTP), and
one-way hashes for credentials we only verify (agent secrets, API tokens, admin passwords:
Argon2id).

The encryption key lives in PATCHFLOW_HOME/secret.key (mode 0600), apart from the database, so a
leaked database dump alone does not reveal proxy or SMTP passwords. PATCHFLOW_SECRET_KEY (the
text of a home's secret.key), when set, is used instead and never written to disk: a Prefect
worker or Dask worker on another machine then needs only its environment, not a copied file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

from patchflow import config

KEY_NAME = "secret.key"
KEY_ENV = "PATCHFLOW_SECRET_KEY"
# Argon2id with OWASP's first recommended setting (46 MiB, 1 pass, 1 lane: about 0.1 s and
# 46 MiB per login, so a burst of logins cannot exhaust a small server). The parameters are
# written into every hash, so raising them later leaves old hashes verifiable, and
# `password_needs_rehash` upgrades them at the next login.
_ARGON2 = PasswordHasher(time_cost=1, memory_cost=47104, parallelism=1)
# The scheme before Argon2: its parameters were not stored, so they are fixed here for good.
_LEGACY_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class SecretError(Exception):
    """An encrypted value cannot be read back (wrong or missing key)."""


def _key_path() -> Path:
    return config.home() / KEY_NAME


def _key_source() -> str:
    """What holds the key, for error messages: the variable's name, never its value."""
    return KEY_ENV if os.environ.get(KEY_ENV, "").strip() else str(_key_path())


def _fernet(create: bool = True) -> Fernet:
    from_env = os.environ.get(KEY_ENV, "").strip()
    if from_env:
        return _parse_key(from_env.encode("utf-8", "replace"), KEY_ENV)
    path = _key_path()
    if not path.exists():
        if not create:
            raise SecretError(f"{path} is missing (and {KEY_ENV} is not set): "
                              "encrypted settings cannot be read")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key())
    return _parse_key(path.read_bytes().strip(), str(path))


def _parse_key(raw: bytes, source: str) -> Fernet:
    """A malformed key is a one-line error naming where it came from; the value itself is never
    echoed, since a nearly-right key is still a secret."""
    try:
        return Fernet(raw)
    except ValueError:  # binascii.Error is a ValueError too
        raise SecretError(f"{source} is not a Fernet key (44 characters of URL-safe base64: "
                          f"the content of a home's {KEY_NAME})") from None


def encrypt(plain: str) -> str:
    return _fernet().encrypt(plain.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(create=False).decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretError(
            f"an encrypted setting does not match the key in {_key_source()}") from None


def new_token(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def hash_token(token: str) -> str:
    """Tokens are 256 random bits, so a fast hash is enough: no dictionary to attack."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(token: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_token(token), stored_hash)


def hash_password(password: str) -> str:
    """Passwords are low-entropy, so they get a slow, memory-hard salted hash: Argon2id in the
    PHC string format (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`)."""
    return _ARGON2.hash(password)


def verify_password(password: str, stored: str) -> bool:
    """Checks Argon2id hashes, and the scrypt hashes of older versions until they are
    re-hashed (see password_needs_rehash)."""
    if stored.startswith("$argon2"):
        try:
            return _ARGON2.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    return _verify_legacy_scrypt(password, stored)


def password_needs_rehash(stored: str) -> bool:
    """True for a hash that is not Argon2id with today's parameters: after a successful login
    the caller stores a fresh hash of the password it just verified."""
    if not stored.startswith("$argon2id$"):
        return True
    try:
        return _ARGON2.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def _verify_legacy_scrypt(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, digest_b64 = stored.split("$")
        salt, expected = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_LEGACY_SCRYPT)
    return hmac.compare_digest(digest, expected)
