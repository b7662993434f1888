"""Talking to another patchflow instance: HTTPS with its certificate pinned by SHA-256, a
replication token, and one-line reasons for everything that can go wrong.

The upstream's certificate is usually self-signed (`patchflow init` makes one), so it is not
checked against a CA: the fingerprint the administrator copied from `patchflow tls fingerprint`
is compared instead, before any byte of the request is sent (urllib3's `assert_fingerprint`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter

from models import PatchServer
from patchflow import crypto
from patchflow.catalog import servers as server_svc
from patchflow.catalog.content import ContentError, ContentStore
from patchflow.http import describe_error, make_session
from sources.records import SourceError

PAGE_TIMEOUT = (10.0, 120.0)


class _PinnedAdapter(HTTPAdapter):
    """Accepts exactly one certificate: the one whose SHA-256 fingerprint is pinned."""

    def __init__(self, fingerprint: str, **kwargs: Any) -> None:
        self._fingerprint = fingerprint.replace(":", "").lower()
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._fingerprint
        kwargs["cert_reqs"] = "CERT_NONE"
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["assert_fingerprint"] = self._fingerprint
        kwargs["cert_reqs"] = "CERT_NONE"
        return super().proxy_manager_for(*args, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, False, cert)  # the pin replaces CA verification


@dataclass
class Upstream:
    """Where and how to reach one downstream patch server's upstream instance."""

    url: str  # https://host:port
    server: str | None  # its patch server; None = its default
    token: str
    fingerprint: str
    proxies: dict[str, str] | None = None
    retries: int = 4

    @classmethod
    def of(cls, server: PatchServer) -> Upstream:
        if not (server.upstream or "").startswith("https://"):
            raise SourceError(f"patch server {server.name!r} has no https:// upstream")
        if not server.upstream_token_enc or not server.upstream_fingerprint:
            raise SourceError(f"patch server {server.name!r}: upstream token or fingerprint "
                              "missing (patchflow server edit --upstream-token/--upstream-"
                              "fingerprint)")
        return cls(server.upstream.rstrip("/"), server.upstream_server,
                   crypto.decrypt(server.upstream_token_enc), server.upstream_fingerprint,
                   server_svc.proxies_of(server))

    def session(self) -> requests.Session:
        http = make_session(proxies=self.proxies, retries=self.retries, verify=False)
        # A certificate that does not match the pin will not match on a retry either.
        retry = http.get_adapter("https://").max_retries.new(other=0)
        http.mount("https://", _PinnedAdapter(self.fingerprint, max_retries=retry))
        http.headers["Authorization"] = f"Bearer {self.token}"
        return http

    def page(self, http: requests.Session, since: int, limit: int) -> bytes:
        params: dict[str, Any] = {"since": since, "limit": limit}
        if self.server:
            params["server"] = self.server
        url = f"{self.url}/api/v1/replication/patches"
        try:
            response = http.get(url, params=params, timeout=PAGE_TIMEOUT)
            _check(response)
            return response.content
        except requests.RequestException as exc:
            raise SourceError(f"upstream {self.url}: {describe(exc)}") from None

    def download(self, http: requests.Session, sha256: str, store: ContentStore) -> Path:
        """Into the content store (resumable, hash-checked) unless already there."""
        url = f"{self.url}/api/v1/replication/content/{quote(sha256)}"
        try:
            return store.download(url, sha256, http)
        except ContentError as exc:
            message = str(exc)
            if self.token in message:
                message = message.replace(self.token, "***")
            raise SourceError(f"content {sha256[:12]}…: {message}") from None


def _check(response: requests.Response) -> None:
    if response.status_code < 400:
        return
    detail = ""
    try:
        body = response.json()
        detail = str(body.get("error", "")) if isinstance(body, dict) else ""
    except ValueError:
        pass
    detail = " ".join(detail.split())[:200]
    if response.status_code in (401, 403):
        raise SourceError(
            f"the upstream refused the replication token (HTTP {response.status_code}"
            f"{': ' + detail if detail else ''}); create one there with `patchflow server "
            "token create` and set it with `patchflow server edit NAME --upstream-token`")
    raise SourceError(f"HTTP {response.status_code} from the upstream"
                      f"{': ' + detail if detail else ''}")


def describe(exc: BaseException) -> str:
    """One line; a pin mismatch says so rather than a generic TLS error."""
    text = str(exc)
    if isinstance(exc, requests.exceptions.SSLError) and "ingerprint" in text:
        return ("TLS error: the upstream's certificate does not match the pinned fingerprint "
                "(--upstream-fingerprint)")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the answer was cut off"
    return describe_error(exc)
