"""A real SMTP server on loopback (aiosmtpd) that keeps what it receives and accepts one login
(svc-reports / PASSWORD), optionally only after STARTTLS: for the tests that send mail."""

from __future__ import annotations

import email
import email.policy
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from tests.support.polling import free_port

PASSWORD = "p@ss wörd-42"


@dataclass
class Smtp:
    port: int
    messages: list[tuple[str, list[str], Message]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)


def smtp_server(tls: ssl.SSLContext | None = None) -> Iterator[Smtp]:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    state = Smtp(free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            state.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"svc-reports" \
            and auth_data.password == PASSWORD.encode()
        if ok:
            state.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)

    kwargs: dict[str, Any] = {"authenticator": authenticator, "auth_require_tls": tls is not None}
    if tls is not None:
        kwargs.update(tls_context=tls, require_starttls=True)
    controller = Controller(Handler(), hostname="127.0.0.1", port=state.port, **kwargs)
    controller.start()
    try:
        yield state
    finally:
        controller.stop()
