"""HTTPS to the patchflow server with the certificate pinned at enrollment.

The pin is checked right after the TLS handshake and before a single byte of HTTP is sent, so an
impostor never sees the agent's secret. http.client (not a third-party client) keeps the agent's
dependencies to the standard library and gives that hook: `connect()`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

USER_AGENT = "patchflow-agent/0.1"


class AgentError(Exception):
    """Anything the agent reports as one line."""


class PinMismatch(AgentError):
    """The server presented a certificate other than the pinned one."""


class ServerUnreachable(AgentError):
    """No answer, or an answer meaning "try later" (5xx, 429): back off and retry. `status` is
    the HTTP status when the server did answer (None: no answer at all), so a caller can tell
    a server that is down from one that cannot take this one request now."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RequestRefused(AgentError):
    """The server answered 4xx: the request itself is wrong and retrying will not help."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"server refused ({status}): {message}")
        self.status = status
        self.message = message


def normalize_fingerprint(value: str) -> str:
    """'sha256:ab:cd…', 'AB CD …' or 64 hex digits → 'AB:CD:…'."""
    digits = re.sub(r"[^0-9A-Fa-f]", "", value.strip().removeprefix("sha256:")
                    .removeprefix("SHA256:"))
    if len(digits) != 64:
        raise AgentError(
            f"invalid fingerprint {value!r}: expected the 64 hex digits "
            "of `patchflow tls fingerprint`"
        )
    digits = digits.upper()
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def fingerprint_of(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def inventory_digest(doc: dict[str, Any]) -> str:
    """SHA-256 of an inventory in canonical form (keys sorted, no blanks, UTF-8), leaving out
    `collected_at`: it changes at every collection while the inventory mostly does not.

    The agent sends it as `If-None-Match`; the server computes the same from the body it stores
    and answers a later upload naming it "unchanged" without parsing or writing.
    """
    canonical = {key: value for key, value in doc.items() if key != "collected_at"}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int | None, *, context: ssl.SSLContext,
                 fingerprint: str | None, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.pinned = fingerprint

    def connect(self) -> None:
        super().connect()
        if self.pinned is None:
            return
        der = self.sock.getpeercert(binary_form=True) if self.sock else None
        actual = fingerprint_of(der) if der else "none"
        if actual != self.pinned:
            self.close()
            raise PinMismatch(
                f"server certificate does not match the pinned one (pinned SHA-256 "
                f"{self.pinned}, got {actual}): refusing to connect; re-enroll if the "
                "server's certificate really changed"
            )


def tls_context(fingerprint: str | None, ca_file: Path | None) -> ssl.SSLContext:
    """Pinning by fingerprint checks the exact certificate (so chain and name checks add
    nothing); pinning by CA verifies the chain and the host name as usual."""
    if ca_file is not None:
        context = ssl.create_default_context(cafile=str(ca_file))
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class ServerClient:
    """One keep-alive connection to the server, reopened when it drops."""

    def __init__(self, server: str, *, fingerprint: str | None = None,
                 ca_file: Path | None = None, agent_id: str | None = None,
                 secret: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(server)
        if parts.scheme != "https" or not parts.hostname:
            raise AgentError(f"invalid server {server!r}: expected https://host:port")
        if fingerprint is None and ca_file is None:
            raise AgentError("the server certificate must be pinned: --fingerprint or --ca")
        self.host = parts.hostname
        self.port = parts.port or 6201
        self.fingerprint = normalize_fingerprint(fingerprint) if fingerprint else None
        try:
            self.context = tls_context(self.fingerprint if ca_file is None else None, ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise AgentError(f"cannot use CA file {ca_file}: {exc}") from None
        self.agent_id = agent_id
        self.secret = secret
        self.timeout = timeout
        self._conn: PinnedHTTPSConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> PinnedHTTPSConnection:
        if self._conn is None:
            pin = self.fingerprint if self.context.verify_mode == ssl.CERT_NONE else None
            self._conn = PinnedHTTPSConnection(self.host, self.port, context=self.context,
                                               fingerprint=pin, timeout=self.timeout)
        return self._conn

    def request(self, method: str, path: str, body: Any = None,
                authenticated: bool = True, headers: dict[str, str] | None = None) -> Any:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            headers["Content-Type"] = "application/json"
        if authenticated:
            if not self.agent_id or not self.secret:
                raise AgentError("not enrolled: run `patchflow-agent enroll`")
            headers["X-Agent-Id"] = self.agent_id
            headers["Authorization"] = f"Bearer {self.secret}"
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            try:
                conn.request(method, path, body=payload, headers=headers)
                response = conn.getresponse()
                status, raw = response.status, response.read()
                if response.will_close:
                    self.close()
                break
            except PinMismatch:
                self.close()
                raise
            except ssl.SSLCertVerificationError as exc:
                self.close()
                raise PinMismatch(
                    f"server certificate is not signed by the pinned CA: {exc.verify_message}"
                ) from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # A keep-alive connection the server already closed fails once; retry fresh.
                if reused and attempt == 1:
                    continue
                raise ServerUnreachable(
                    f"cannot reach https://{self.host}:{self.port}: {exc or type(exc).__name__}"
                ) from None
        return _decode(status, raw)


    def download(self, path: str, out: BinaryIO, chunk: int = 1 << 16) -> int:
        """Stream `path` (e.g. /content/sha256/…) from this server into `out`, over the same
        pinned, authenticated connection as every other call; returns the bytes written."""
        if not self.agent_id or not self.secret:
            raise AgentError("not enrolled: run `patchflow-agent enroll`")
        headers = {"User-Agent": USER_AGENT, "X-Agent-Id": self.agent_id,
                   "Authorization": f"Bearer {self.secret}"}
        for attempt in (1, 2):
            reused = self._conn is not None
            conn = self._connection()
            written = 0
            try:
                conn.request("GET", path, headers=headers)
                response = conn.getresponse()
                if response.status != 200:
                    raw = response.read()
                    if response.will_close:
                        self.close()
                    return _decode(response.status, raw) or 0  # raises for 4xx/5xx
                while block := response.read(chunk):
                    out.write(block)
                    written += len(block)
                if response.will_close:
                    self.close()
                return written
            except PinMismatch:
                self.close()
                raise
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if reused and attempt == 1 and written == 0:
                    continue
                raise ServerUnreachable(
                    f"download of {path} from https://{self.host}:{self.port} failed: "
                    f"{exc or type(exc).__name__}") from None
        raise AssertionError("unreachable")


def download_url(url: str, out: BinaryIO, timeout: float = 60.0, chunk: int = 1 << 16) -> int:
    """Stream a vendor URL (roaming endpoints) into `out` with the system's certificate checks;
    the caller verifies the SHA-256 before anything runs, so the source need not be trusted."""
    if not url.startswith(("https://", "http://")):
        raise AgentError(f"refusing to download {url[:80]!r}: not an http(s) URL")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    written = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            while block := response.read(chunk):
                out.write(block)
                written += len(block)
    except urllib.error.HTTPError as exc:
        raise ServerUnreachable(f"download of {url} failed: HTTP {exc.code}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ServerUnreachable(f"download of {url} failed: {exc}") from None
    return written


def _decode(status: int, raw: bytes) -> Any:
    try:
        data = json.loads(raw) if raw else None
    except ValueError:
        data = None
    if 200 <= status < 300:
        return data
    message = data.get("error") if isinstance(data, dict) else None
    message = message or raw[:200].decode("utf-8", "replace") or f"HTTP {status}"
    if status >= 500 or status == 429:
        raise ServerUnreachable(f"server busy or failing ({status}): {message}", status)
    raise RequestRefused(status, message)
