"""A downstream [MS-WSUSSS] client: talks SOAP over HTTP(S) to the organisation's WSUS server.

patchflow acts as a downstream server (DSS) in autonomous mode: it authorizes (GetAuthConfig,
GetAuthorizationCookie, GetCookie), reads the server's configuration, lists revisions and
fetches their metadata in the batch size the server announces. A cookie the server rejects as
expired or invalid is renewed once, as the specification's DSS does. Every failure is a
SourceError with one line naming the operation.
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import requests

from patchflow.http import describe_error, make_session
from sources import wsus_soap as soap
from sources.records import SourceError

TIMEOUT = (10.0, 300.0)
_RENEW = {"InvalidCookie", "CookieExpired", "InvalidAuthorizationCookie"}


class WsusClient:
    def __init__(self, base_url: str, account_name: str, proxies: dict[str, str] | None = None,
                 verify: bool | str = True) -> None:
        self.base = base_url.rstrip("/")
        self.account_name = account_name
        # A stable identity per patch server, as the WSUS server keeps one per downstream.
        self.account_guid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"patchflow:{account_name}"))
        self.verify = verify
        self.http = make_session(proxies=proxies, verify=verify)
        # A refused certificate is refused again on a retry.
        retry = self.http.get_adapter("https://").max_retries.new(other=0)
        self.http.get_adapter("https://").max_retries = retry
        self.cookie: soap.Cookie | None = None
        self.config: soap.ConfigData | None = None

    def close(self) -> None:
        self.http.close()

    # --- transport ---------------------------------------------------------------------------

    def _call(self, path: str, operation: str, body: bytes) -> bytes:
        url = path if path.startswith(("http://", "https://")) else f"{self.base}/{path}"
        headers = {"Content-Type": "text/xml; charset=utf-8",
                   "SOAPAction": f'"{soap.action(operation)}"'}
        try:
            # verify per request: requests would let REQUESTS_CA_BUNDLE override the session's.
            response = self.http.post(url, data=body, headers=headers, timeout=TIMEOUT,
                                      verify=self.verify)
            content = response.content
        except requests.RequestException as exc:
            raise SourceError(f"WSUS {operation}: {_describe(exc)}") from None
        if response.status_code >= 400:
            fault = soap.fault_of(operation, content)
            if fault is not None:
                raise fault
            raise SourceError(f"WSUS {operation}: HTTP {response.status_code} from {url}")
        return content

    def _with_cookie(self, operation: str, build: Callable[[soap.Cookie], bytes]) -> bytes:
        if self.cookie is None:
            self.authenticate()
        assert self.cookie is not None
        try:
            return self._call(soap.SYNC_PATH, operation, build(self.cookie))
        except soap.WsusFault as fault:
            if fault.code not in _RENEW:
                raise
            self.authenticate()
            return self._call(soap.SYNC_PATH, operation, build(self.cookie))

    # --- operations ----------------------------------------------------------------------

    def authenticate(self) -> soap.Cookie:
        auth = soap.read_auth_config(
            self._call(soap.SYNC_PATH, "GetAuthConfig", soap.get_auth_config()))
        plugin, data = soap.read_authorization_cookie(self._call(
            auth.service_url, "GetAuthorizationCookie",
            soap.get_authorization_cookie(self.account_name, self.account_guid)))
        self.cookie = soap.read_cookie(self._call(
            soap.SYNC_PATH, "GetCookie",
            soap.get_cookie(plugin, data, self.cookie, auth.last_change, dt.datetime.now(dt.UTC))))
        return self.cookie

    def config_data(self) -> soap.ConfigData:
        self.config = soap.read_config_data(
            self._with_cookie("GetConfigData", soap.get_config_data))
        return self.config

    def revisions(self, get_config: bool, products: list[str] | None = None,
                  classifications: list[str] | None = None) -> list[soap.RevisionId]:
        return soap.read_revision_id_list(self._with_cookie(
            "GetRevisionIdList",
            lambda c: soap.get_revision_id_list(c, get_config, products, classifications)))

    def update_data(self, ids: list[soap.RevisionId]) -> soap.UpdateData:
        return soap.read_update_data(
            self._with_cookie("GetUpdateData", lambda c: soap.get_update_data(c, ids)))

    def decryption_data(self, ids: list[soap.RevisionId]) -> dict[str, int]:
        return soap.read_decryption_data(self._with_cookie(
            "GetUpdateDecryptionData", lambda c: soap.get_update_decryption_data(c, ids)))

    def content_url(self, digest: str, file_name: str) -> str | None:
        """The WSUS content download URL of a file ([MS-WSUSSS] 3.2.4.4): /Content/, the last
        two hex digits of its SHA-1, then the SHA-1 and the file's extension."""
        try:
            hexdigest = base64.b64decode(digest, validate=True).hex().upper()
        except ValueError:
            return None
        dot = file_name.rfind(".")
        suffix = file_name[dot:].lower() if dot >= 0 else ""
        return f"{self.base}/Content/{hexdigest[-2:]}/{hexdigest}{suffix}"


def wsus_verify() -> bool | str:
    """`[wsus] ca_file` in patchflow.toml: the CA bundle that signed the WSUS certificate
    (internal CAs are common); otherwise the system's trust store."""
    from patchflow import config

    ca_file = config.setting("wsus", "ca_file")
    return str(ca_file) if ca_file else True


def decompress_blob(data: bytes) -> bytes:
    """XmlUpdateBlobCompressed: a cabinet holding the update XML in UTF-16. Returned as UTF-8
    without its XML declaration, ready for the metadata parser."""
    if shutil.which("cabextract") is None:
        raise SourceError("WSUS sent compressed metadata and cabextract is not installed")
    with tempfile.TemporaryDirectory(prefix="wsus-blob-") as tmp:
        path = Path(tmp) / "blob.cab"
        path.write_bytes(data)
        try:
            done = subprocess.run(["cabextract", "-q", "-p", str(path)], capture_output=True,
                                  timeout=60, check=False)
        except subprocess.TimeoutExpired:
            raise SourceError("WSUS metadata: decompressing an update blob timed out") from None
    if done.returncode != 0 or not done.stdout:
        raise SourceError("WSUS metadata: a compressed update blob is not a readable cabinet")
    raw = done.stdout
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = raw.decode("utf-16")
    elif raw[1:2] == b"\x00":
        text = raw.decode("utf-16-le")
    else:
        text = raw.decode("utf-8", "replace")
    text = text.lstrip("\ufeff")
    if text.startswith("<?xml"):
        text = text[text.find("?>") + 2 :]
    return text.encode("utf-8")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "the answer was cut off"
    return describe_error(exc)
