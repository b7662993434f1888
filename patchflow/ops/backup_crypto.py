"""Passphrase encryption of backup archives (`patchflow backup --encrypt`).

A backup holds everything an attacker wants from patchflow (agent secret hashes, admin password
hashes, the encrypted proxy and SMTP passwords, the whole inventory), and it is the file most
likely to be copied to a share or a tape. This module owns the encrypted file format only:

    MAGIC | header length (4 bytes, big-endian) | header (JSON) | chunk | chunk | ... | last chunk

The key comes from the passphrase through scrypt (salt and cost parameters in the header, so
they can be raised later without breaking old files). The zip is cut into 1 MiB chunks, each
sealed with AES-256-GCM under the nonce `prefix | chunk number | last flag` and the whole
header as associated data: a chunk cannot be altered, reordered, dropped or cut off, and a
truncated file is detected because its last chunk never arrives. The header also carries a
hash of a second derived key, so a wrong passphrase is told apart from a damaged file before
any chunk is read. Writing is streamed (the zip never exists in plain text on disk); reading
decrypts into a file the caller provides.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from typing import IO, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from patchflow.errors import UserError

MAGIC = b"PATCHFLOW-ENCRYPTED-BACKUP/1\n"
CHUNK = 1 << 20
TAG = 16
# OWASP's scrypt recommendation (2^17, 8, 1): about 128 MiB and a fraction of a second.
SCRYPT = {"n": 2**17, "r": 8, "p": 1}
MAX_SCRYPT_MEMORY = 1 << 30  # refuse headers that would make restore allocate more than 1 GiB
MIN_PASSPHRASE = 12


class WrongPassphrase(UserError):
    """The passphrase does not open this archive."""


def is_encrypted(path: os.PathLike[str] | str) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes]:
    if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 \
            or 128 * n * r * p > MAX_SCRYPT_MEMORY:
        raise UserError("unsupported key derivation parameters")
    material = hashlib.scrypt(passphrase.encode(), salt=salt, n=n, r=r, p=p, dklen=64,
                              maxmem=128 * n * r * p + (8 << 20))
    return material[:32], hashlib.sha256(material[32:]).digest()


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    return prefix + index.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class EncryptingWriter:
    """A write-only stream for zipfile: what is written reaches `out` only as sealed chunks.

    It has no tell(), so zipfile writes in streaming mode (data descriptors, no seeking back).
    close() seals the last, shorter (possibly empty) chunk; it does not close `out`.
    """

    def __init__(self, out: IO[bytes], passphrase: str) -> None:
        if len(passphrase) < MIN_PASSPHRASE:
            raise UserError(f"the backup passphrase must be at least {MIN_PASSPHRASE} "
                            "characters long")
        salt = secrets.token_bytes(16)
        self._prefix = secrets.token_bytes(7)
        key, check = _derive(passphrase, salt, **SCRYPT)
        header = json.dumps({
            "kdf": "scrypt", **SCRYPT, "salt": base64.b64encode(salt).decode(),
            "cipher": "AES-256-GCM", "chunk": CHUNK,
            "nonce_prefix": base64.b64encode(self._prefix).decode(),
            "check": base64.b64encode(check).decode(),
        }).encode()
        self._aad = MAGIC + len(header).to_bytes(4, "big") + header
        self._aes = AESGCM(key)
        self._out = out
        self._buffer = bytearray()
        self._index = 0
        self._closed = False
        out.write(self._aad)

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) >= CHUNK:
            self._seal(bytes(self._buffer[:CHUNK]), last=False)
            del self._buffer[:CHUNK]
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        if not self._closed:
            self._seal(bytes(self._buffer), last=True)
            self._buffer.clear()
            self._closed = True
            self._out.flush()

    def _seal(self, plain: bytes, last: bool) -> None:
        self._out.write(self._aes.encrypt(_nonce(self._prefix, self._index, last), plain,
                                          self._aad))
        self._index += 1


def _read_header(src: IO[bytes], label: str) -> tuple[bytes, dict[str, Any]]:
    damaged = UserError(f"{label}: damaged encrypted backup (unreadable header)")
    if src.read(len(MAGIC)) != MAGIC:
        raise UserError(f"{label}: not an encrypted patchflow backup")
    size_bytes = src.read(4)
    if len(size_bytes) != 4 or not 0 < (size := int.from_bytes(size_bytes, "big")) <= 4096:
        raise damaged
    header_bytes = src.read(size)
    try:
        header = json.loads(header_bytes)
        if not isinstance(header, dict) or header.get("kdf") != "scrypt" \
                or header.get("cipher") != "AES-256-GCM" or header.get("chunk") != CHUNK:
            raise damaged
        for name in ("salt", "nonce_prefix", "check"):
            header[name] = base64.b64decode(header[name], validate=True)
        if len(header["nonce_prefix"]) != 7:
            raise damaged
        for name in ("n", "r", "p"):
            if not isinstance(header[name], int):
                raise damaged
    except (ValueError, KeyError, TypeError):
        raise damaged from None
    return MAGIC + size_bytes + header_bytes, header


def decrypt(src: IO[bytes], dst: IO[bytes], passphrase: str, label: str) -> None:
    """Write the plain zip to `dst`; a wrong passphrase or any tampering is one UserError.

    On error `dst` holds a prefix of the plain text: the caller writes to a private temporary
    file and deletes it."""
    aad, header = _read_header(src, label)
    key, check = _derive(passphrase, header["salt"], header["n"], header["r"], header["p"])
    if not secrets.compare_digest(check, header["check"]):
        raise WrongPassphrase(f"{label}: wrong passphrase for this encrypted backup")
    aes = AESGCM(key)
    index = 0
    while True:
        sealed = src.read(CHUNK + TAG)
        last = len(sealed) < CHUNK + TAG
        if not sealed:
            raise UserError(f"{label}: damaged encrypted backup (truncated)")
        try:
            dst.write(aes.decrypt(_nonce(header["nonce_prefix"], index, last), sealed, aad))
        except InvalidTag:
            raise UserError(f"{label}: damaged encrypted backup (chunk {index} fails its "
                            "authentication)") from None
        index += 1
        if last:
            break
    if src.read(1):
        raise UserError(f"{label}: damaged encrypted backup (data after the end)")
