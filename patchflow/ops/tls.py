"""The HTTPS server's certificate: generated self-signed by `patchflow init` unless the admin
configured one, and identified by its SHA-256 fingerprint, which agents pin at enrollment.

Importing this module registers the init hook, so `patchflow init` creates the certificate once
the host name is known.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from patchflow import config
from patchflow.errors import UserError
from patchflow.ops import setup

CERT_NAME = "server.crt"
KEY_NAME = "server.key"
VALIDITY_DAYS = 3650


def tls_dir() -> Path:
    return config.home() / "tls"


def configured_pair() -> tuple[Path, Path] | None:
    """The admin's own certificate from `[server] cert`/`key`, if set."""
    cert, key = config.setting("server", "cert"), config.setting("server", "key")
    if cert and key:
        return Path(cert), Path(key)
    return None


def cert_paths() -> tuple[Path, Path]:
    """The certificate and key `patchflow serve` uses."""
    return configured_pair() or (tls_dir() / CERT_NAME, tls_dir() / KEY_NAME)


def server_host() -> str:
    return str(config.setting("server", "host") or socket.getfqdn() or "localhost")


def _san_entries(host: str) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for value in (host, "localhost", "127.0.0.1"):
        if value in seen:
            continue
        seen.add(value)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(value.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(value))
    return names


def generate_self_signed(host: str, cert_path: Path, key_path: Path) -> None:
    """An ECDSA P-256 certificate: signatures are cheap, which matters when thousands of agents
    open a connection a minute."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, host[:64]),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "patchflow"),
    ])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(_san_entries(host)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, encipher_only=False,
                          decipher_only=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = key_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes)
    os.replace(tmp, key_path)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise UserError(f"no TLS certificate at {path}: run `patchflow init`") from None
    except ValueError:
        raise UserError(f"{path} is not a PEM certificate") from None


def format_fingerprint(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def fingerprint(path: Path | None = None) -> str:
    """SHA-256 over the DER certificate, as `AB:CD:...` (what browsers and openssl show)."""
    cert = load_certificate(path or cert_paths()[0])
    return format_fingerprint(cert.public_bytes(serialization.Encoding.DER))


def san_names(path: Path) -> list[str]:
    cert = load_certificate(path)
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(name.value) for name in ext.value]


def ensure_certificate() -> list[str]:
    """Init hook: a configured certificate is used as is; otherwise generate one once. An existing
    certificate is never replaced, because every enrolled agent has pinned it."""
    configured = configured_pair()
    if configured:
        return [f"tls: using configured certificate {configured[0]}"]
    cert_path, key_path = cert_paths()
    host = server_host()
    if cert_path.exists() and key_path.exists():
        line = f"tls: certificate {cert_path} kept"
        if host not in san_names(cert_path):
            line += f" (it does not name {host}; agents connecting by that name need --fingerprint)"
        return [line]
    generate_self_signed(host, cert_path, key_path)
    return [
        f"tls: self-signed certificate for {host}: {cert_path}",
        "tls: `patchflow tls fingerprint` prints what agents pin",
    ]


if ensure_certificate not in setup.INIT_HOOKS:
    setup.INIT_HOOKS.append(ensure_certificate)
