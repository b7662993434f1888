"""Report delivery by e-mail (SMTP), and where its settings live.

Settings live in the `settings` table (keys `smtp.*`), not in patchflow.toml: the web console and
the admin API edit them like any other server setting, they travel with the database backup, and
the password is stored only encrypted with PATCHFLOW_HOME/secret.key, which is kept apart from
the database (a dump alone does not reveal it). The plain password exists only in memory while
a message is being sent and never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import base64
import mimetypes
import re
import smtplib
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from patchflow import crypto
from patchflow.errors import UserError
from patchflow.ops import settings_store

PREFIX = "smtp."
SECURITY = ("starttls", "ssl", "none")
DEFAULT_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
DEFAULT_MAX_ATTACHMENT_MB = 10.0
_ADDRESS = re.compile(r"^[^@\s<>,;\"]+@[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?$|^\[?[0-9A-Fa-f:.]+\]?$")


@dataclass
class SmtpSettings:
    host: str
    sender: str
    port: int = 587
    security: str = "starttls"  # starttls | ssl | none
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None  # extra CA bundle to trust (a private CA or self-signed relay)
    timeout: float = 30.0
    max_attachment_mb: float = DEFAULT_MAX_ATTACHMENT_MB

    def public(self) -> dict[str, Any]:
        """For display: everything but the password, which is only said to be set or not."""
        return {
            "host": self.host,
            "port": self.port,
            "security": self.security,
            "user": self.user,
            "password_set": bool(self.password),
            "sender": self.sender,
            "ca_file": self.ca_file,
            "max_attachment_mb": self.max_attachment_mb,
        }


def parse_addresses(value: str | Iterable[str] | None, what: str = "e-mail address") -> list[str]:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for item in items:
        address = item.strip()
        if not address:
            continue
        if not _ADDRESS.match(address):
            raise UserError(f"invalid {what} {address!r}: use name@example.org")
        if address not in out:
            out.append(address)
    return out


def load_settings(session: Session, decrypt: bool = True) -> SmtpSettings | None:
    """The stored SMTP settings, None when no host is configured."""
    raw = settings_store.read_group(session, PREFIX)
    if not raw.get("host"):
        return None
    password = None
    if raw.get("password_enc"):
        password = crypto.decrypt(raw["password_enc"]) if decrypt else "(set)"
    return SmtpSettings(
        host=str(raw["host"]),
        sender=str(raw.get("sender") or ""),
        port=int(raw.get("port") or DEFAULT_PORTS[raw.get("security") or "starttls"]),
        security=raw.get("security") or "starttls",
        user=raw.get("user") or None,
        password=password,
        ca_file=raw.get("ca_file") or None,
        timeout=float(raw.get("timeout") or 30.0),
        max_attachment_mb=float(raw.get("max_attachment_mb") or DEFAULT_MAX_ATTACHMENT_MB),
    )


def save_settings(
    session: Session,
    *,
    host: str | None = None,
    port: int | None = None,
    security: str | None = None,
    user: str | None = None,
    password: str | None = None,
    sender: str | None = None,
    ca_file: str | None = None,
    timeout: float | None = None,
    max_attachment_mb: float | None = None,
) -> SmtpSettings:
    """Validate and store the given settings (None leaves a value as is; '' clears user,
    password and ca_file). Nothing is written unless every value is valid."""
    current = settings_store.read_group(session, PREFIX)
    values: dict[str, str | None] = {}
    if host is not None:
        if not _HOST.fullmatch(host.strip()):
            raise UserError(f"invalid SMTP host {host!r}: give a host name or an IP address")
        values["host"] = host.strip()
    elif not current.get("host"):
        raise UserError("the SMTP host is not set: give --host")
    if security is not None:
        if security not in SECURITY:
            raise UserError(f"invalid SMTP security {security!r}: use {', '.join(SECURITY)}")
        values["security"] = security
    if port is not None:
        if not 1 <= int(port) <= 65535:
            raise UserError(f"invalid SMTP port {port}: must be between 1 and 65535")
        values["port"] = str(int(port))
    if sender is not None:
        values["sender"] = parse_addresses(sender, "sender address")[0] if sender.strip() else ""
    if not (values.get("sender") or current.get("sender")):
        raise UserError("the sender address is not set: give --sender")
    if user is not None:
        values["user"] = user.strip() or None
    if password is not None:
        values["password_enc"] = crypto.encrypt(password) if password else None
    if ca_file is not None:
        if ca_file and not Path(ca_file).is_file():
            raise UserError(f"CA file {ca_file!r} does not exist")
        values["ca_file"] = str(Path(ca_file).resolve()) if ca_file else None
    if timeout is not None:
        if not 1 <= timeout <= 600:
            raise UserError(f"invalid SMTP timeout {timeout}: use 1 to 600 seconds")
        values["timeout"] = str(timeout)
    if max_attachment_mb is not None:
        if not 0 <= max_attachment_mb <= 100:
            raise UserError(f"invalid attachment limit {max_attachment_mb}: use 0 to 100 MB")
        values["max_attachment_mb"] = str(max_attachment_mb)
    settings_store.write_group(session, PREFIX, values)
    settings = load_settings(session, decrypt=False)
    assert settings is not None
    return settings


def build_message(
    sender: str,
    recipients: Sequence[str],
    subject: str,
    html: str,
    text: str,
    attachments: Sequence[tuple[str, bytes]] = (),
) -> EmailMessage:
    """multipart/mixed: a text/plain + text/html alternative, then the attachments."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    message.set_content(text, charset="utf-8")
    message.add_alternative(html, subtype="html", charset="utf-8")
    for name, data in attachments:
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".csv"):
            ctype = "text/csv"
        maintype, subtype = ctype.split("/", 1)
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message


def pick_attachments(
    files: Sequence[Path], limit_mb: float
) -> tuple[list[Path], list[Path]]:
    """(attached, left out): smallest first while the total stays under the limit, so the
    summaries always travel and only the big per-row tables stay on the server."""
    budget = int(limit_mb * 1024 * 1024)
    attached: list[Path] = []
    left: list[Path] = []
    for path in sorted(files, key=lambda p: (p.stat().st_size, p.name)):
        size = path.stat().st_size
        if size <= budget:
            attached.append(path)
            budget -= size
        else:
            left.append(path)
    order = {p: i for i, p in enumerate(files)}
    return sorted(attached, key=order.__getitem__), sorted(left, key=order.__getitem__)


def _login(client: smtplib.SMTP, user: str, password: str) -> None:
    """smtplib encodes credentials as ASCII; RFC 4616 PLAIN is UTF-8, so a password such as
    'p@ss wörd' is sent by hand instead of failing with UnicodeEncodeError."""
    if (user + password).isascii():
        client.login(user, password)
        return
    if "PLAIN" not in client.esmtp_features.get("auth", "").upper().split():
        raise MailError("the SMTP server does not offer AUTH PLAIN, which a non-ASCII user "
                        "name or password needs")
    token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode()).decode()
    code, response = client.docmd("AUTH", "PLAIN " + token)
    if code != 235:
        raise smtplib.SMTPAuthenticationError(code, response)


class MailError(UserError):
    """The message could not be delivered; the message says why in one line."""


def send_message(settings: SmtpSettings, message: EmailMessage) -> None:
    """Deliver through the configured relay; every failure becomes a one-line MailError."""
    where = f"{settings.host}:{settings.port}"
    context = ssl.create_default_context(cafile=settings.ca_file)
    try:
        if settings.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout, context=context
            )
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with client:
            client.ehlo()
            if settings.security == "starttls":
                client.starttls(context=context)
                client.ehlo()
            if settings.user:
                _login(client, settings.user, settings.password or "")
            refused = client.send_message(message)
        if refused:
            raise MailError(f"{where} refused recipients: {', '.join(sorted(refused))}")
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"{where} rejected the SMTP login for {settings.user!r} ({exc.smtp_code})"
                        ) from None
    except smtplib.SMTPNotSupportedError:
        raise MailError(f"{where} does not offer STARTTLS: set --security ssl or none") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise MailError(f"{where} refused recipients: {', '.join(sorted(exc.recipients))}"
                        ) from None
    except smtplib.SMTPResponseException as exc:
        reason = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        raise MailError(f"{where} answered {exc.smtp_code}: {reason.splitlines()[0]}") from None
    except (TimeoutError, smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MailError(f"cannot send mail through {where}: {text}") from None
