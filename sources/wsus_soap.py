"""The SOAP messages of [MS-WSUSSS] (WSUS server-to-server sync), downstream side: building the
requests and reading the answers. Pure functions over bytes; HTTP lives in
patchflow.upstreams.wsus_client.

Operations used, in the order the specification's section 3.2.4 prescribes: GetAuthConfig,
GetAuthorizationCookie (DSS authorization service), GetCookie, GetConfigData,
GetRevisionIdList (categories first, then updates), GetUpdateData in batches of at most
MaxNumberOfUpdatesPerRequest, and GetUpdateDecryptionData for updates whose files are
encrypted. Answers are parsed with defusedxml and names are matched without prefixes; a SOAP
fault becomes WsusFault with the ErrorCode the specification defines (InvalidCookie, ...).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element
from xml.sax.saxutils import escape

from sources.records import SourceError
from sources.wsus_metadata import local, parse_xml

NS_SYNC = "http://www.microsoft.com/SoftwareDistribution"
NS_AUTH = "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService"
SYNC_PATH = "ServerSyncWebService/ServerSyncWebService.asmx"
DEFAULT_AUTH_PATH = "DssAuthWebService/DssAuthWebService.asmx"
PROTOCOL_VERSION = "1.20"
_ENVELOPE = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
    'xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soap:Body>{body}</soap:Body></soap:Envelope>'
)


class WsusFault(SourceError):
    """The WSUS server answered with a SOAP fault."""

    def __init__(self, operation: str, code: str, message: str) -> None:
        self.operation, self.code = operation, code
        detail = f" ({message})" if message and message != code else ""
        super().__init__(f"WSUS refused {operation}: {code}{detail}")


@dataclass(frozen=True)
class Cookie:
    expiration: str
    data: str  # base64, opaque


@dataclass(frozen=True)
class AuthConfig:
    last_change: str | None
    plugin_id: str
    service_url: str


@dataclass(frozen=True)
class ConfigData:
    catalog_only: bool
    max_updates: int
    max_decryption: int
    languages: tuple[str, ...]


@dataclass(frozen=True)
class RevisionId:
    update_id: str  # lowercase GUID
    revision: int


@dataclass
class UpdateBlob:
    """One ServerSyncUpdateData: the update's XML (plain or compressed) and its files."""

    id: RevisionId
    xml: bytes | None
    compressed: bytes | None
    digests: list[str] = field(default_factory=list)  # base64 SHA-1


@dataclass
class UpdateData:
    updates: list[UpdateBlob]
    urls: dict[str, str]  # base64 SHA-1 digest -> MUUrl


# --------------------------------------------------------------------------------------------
# Requests


def action(operation: str) -> str:
    namespace = NS_AUTH if operation == "GetAuthorizationCookie" else NS_SYNC
    return f"{namespace}/{operation}"


def envelope(operation: str, inner: str = "") -> bytes:
    namespace = NS_AUTH if operation == "GetAuthorizationCookie" else NS_SYNC
    body = f'<{operation} xmlns="{namespace}">{inner}</{operation}>'
    return _ENVELOPE.format(body=body).encode("utf-8")


def get_auth_config() -> bytes:
    return envelope("GetAuthConfig")


def get_authorization_cookie(account_name: str, account_guid: str) -> bytes:
    return envelope("GetAuthorizationCookie", _el("accountName", account_name)
                    + _el("accountGuid", account_guid))


def get_cookie(plugin_id: str, cookie_data: str, old: Cookie | None, last_change: str | None,
               now: dt.datetime) -> bytes:
    inner = ("<authCookies><AuthorizationCookie>" + _el("PlugInId", plugin_id)
             + _el("CookieData", cookie_data) + "</AuthorizationCookie></authCookies>")
    if old is not None:
        inner += f"<oldCookie>{_cookie(old)}</oldCookie>"
    inner += _el("lastChange", last_change or "0001-01-01T00:00:00")
    inner += _el("currentTime", now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    inner += _el("protocolVersion", PROTOCOL_VERSION)
    return envelope("GetCookie", inner)


def get_config_data(cookie: Cookie) -> bytes:
    return envelope("GetConfigData", f"<cookie>{_cookie(cookie)}</cookie>")


def get_revision_id_list(cookie: Cookie, get_config: bool, products: list[str] | None = None,
                         classifications: list[str] | None = None) -> bytes:
    """No Anchor: patchflow diffs the full list against what it stored (see
    patchflow.upstreams.wsus), which stays correct after an interrupted sync; the
    specification makes the anchor a SHOULD."""
    inner = _el("GetConfig", "true" if get_config else "false") + _el("Get63LanguageOnly",
                                                                      "false")
    if products:
        inner += "<Categories>" + "".join(_id_and_delta(g) for g in products) + "</Categories>"
    if classifications:
        inner += ("<Classifications>" + "".join(_id_and_delta(g) for g in classifications)
                  + "</Classifications>")
    return envelope("GetRevisionIdList", f"<cookie>{_cookie(cookie)}</cookie>"
                                         f"<filter>{inner}</filter>")


def get_update_data(cookie: Cookie, ids: list[RevisionId]) -> bytes:
    return envelope("GetUpdateData", f"<cookie>{_cookie(cookie)}</cookie>{_ids(ids)}")


def get_update_decryption_data(cookie: Cookie, ids: list[RevisionId]) -> bytes:
    return envelope("GetUpdateDecryptionData", f"<cookie>{_cookie(cookie)}</cookie>{_ids(ids)}")


def _el(name: str, value: str) -> str:
    return f"<{name}>{escape(value)}</{name}>"


def _cookie(cookie: Cookie) -> str:
    return _el("Expiration", cookie.expiration) + _el("EncryptedData", cookie.data)


def _id_and_delta(guid: str) -> str:
    return f"<IdAndDelta><Id>{escape(guid)}</Id><Delta>false</Delta></IdAndDelta>"


def _ids(ids: list[RevisionId]) -> str:
    items = "".join(f"<UpdateIdentity>{_el('UpdateID', r.update_id)}"
                    f"{_el('RevisionNumber', str(r.revision))}</UpdateIdentity>" for r in ids)
    return f"<updateIds>{items}</updateIds>"


# --------------------------------------------------------------------------------------------
# Answers


def result(operation: str, data: bytes) -> Element:
    """The <OperationResult> element of an answer; WsusFault for a SOAP fault, SourceError
    (one line) for anything that is not the expected answer."""
    root = parse_xml(data, f"WSUS {operation} answer")
    if local(root.tag) != "Envelope":
        raise SourceError(f"WSUS {operation} answer: not a SOAP envelope")
    body = _child(root, "Body")
    if body is None or not len(body):
        raise SourceError(f"WSUS {operation} answer: empty SOAP body")
    first = body[0]
    if local(first.tag) == "Fault":
        raise _fault(operation, first)
    if local(first.tag) != f"{operation}Response":
        raise SourceError(f"WSUS {operation} answer: unexpected {local(first.tag)}")
    found = _child(first, f"{operation}Result")
    if found is None:
        raise SourceError(f"WSUS {operation} answer: no {operation}Result")
    return found


def fault_of(operation: str, data: bytes) -> WsusFault | None:
    """The fault in an HTTP 500 answer, if it is one."""
    try:
        result(operation, data)
    except WsusFault as exc:
        return exc
    except SourceError:
        return None
    return None


def _fault(operation: str, element: Element) -> WsusFault:
    code = detail = summary = ""
    for item in element.iter():
        name = local(item.tag)
        text = (item.text or "").strip()
        if name == "ErrorCode" and text:
            code = text
        elif name == "Message" and text:
            detail = text  # the detail's message says more than the generic faultstring
        elif name == "faultstring" and text:
            summary = text
    message = detail or summary
    return WsusFault(operation, code or "SOAP fault", " ".join(message.split())[:200])


def read_auth_config(data: bytes) -> AuthConfig:
    found = result("GetAuthConfig", data)
    plugin = next((p for p in found.iter() if local(p.tag) == "AuthPlugInInfo"), None)
    if plugin is None:
        raise SourceError("WSUS GetAuthConfig answer: no authorization plug-in")
    return AuthConfig(_text(found, "LastChange"), _text(plugin, "PlugInID") or "DssTargeting",
                      _text(plugin, "ServiceUrl") or DEFAULT_AUTH_PATH)


def read_authorization_cookie(data: bytes) -> tuple[str, str]:
    found = result("GetAuthorizationCookie", data)
    cookie = _text(found, "CookieData")
    if not cookie:
        raise SourceError("WSUS GetAuthorizationCookie answer: no cookie data")
    return _text(found, "PlugInId") or "DssTargeting", _b64(cookie, "CookieData")


def read_cookie(data: bytes) -> Cookie:
    found = result("GetCookie", data)
    encrypted = _text(found, "EncryptedData")
    if not encrypted:
        raise SourceError("WSUS GetCookie answer: no cookie")
    return Cookie(_text(found, "Expiration") or "", _b64(encrypted, "EncryptedData"))


def read_config_data(data: bytes) -> ConfigData:
    found = result("GetConfigData", data)
    languages = tuple(
        _text(item, "ShortLanguage") or "" for item in found.iter()
        if local(item.tag) == "ServerSyncLanguageData"
        and (_text(item, "Enabled") or "true").lower() == "true")
    return ConfigData(
        catalog_only=(_text(found, "CatalogOnlySync") or "false").lower() == "true",
        max_updates=_int(_text(found, "MaxNumberOfUpdatesPerRequest"), 50),
        max_decryption=_int(_text(found, "MaxUpdatesPerRequestInGetUpdateDecryptionData"), 50),
        languages=tuple(x for x in languages if x),
    )


def read_revision_id_list(data: bytes) -> list[RevisionId]:
    found = result("GetRevisionIdList", data)
    ids = []
    for item in found.iter():
        if local(item.tag) == "UpdateIdentity":
            ids.append(_revision_id(item, "GetRevisionIdList"))
    return ids


def read_update_data(data: bytes) -> UpdateData:
    found = result("GetUpdateData", data)
    updates: list[UpdateBlob] = []
    urls: dict[str, str] = {}
    for item in found.iter():
        name = local(item.tag)
        if name == "ServerSyncUpdateData":
            identity = _child(item, "Id")
            if identity is None:
                raise SourceError("WSUS GetUpdateData answer: an update without Id")
            xml = _text(item, "XmlUpdateBlob")
            compressed = _text(item, "XmlUpdateBlobCompressed")
            digest_list = _child(item, "FileDigestList")
            updates.append(UpdateBlob(
                id=_revision_id(identity, "GetUpdateData"),
                xml=xml.encode("utf-8") if xml else None,
                compressed=base64.b64decode(_b64(compressed, "XmlUpdateBlobCompressed"))
                if compressed else None,
                digests=[(d.text or "").strip() for d in (digest_list if digest_list is not None
                                                          else []) if (d.text or "").strip()],
            ))
        elif name == "ServerSyncUrlData":
            digest, url = _text(item, "FileDigest"), _text(item, "MUUrl")
            if digest and url:
                urls[digest] = url
    return UpdateData(updates, urls)


def read_decryption_data(data: bytes) -> dict[str, int]:
    """Update id -> number of file keys received (the keys themselves are not kept)."""
    found = result("GetUpdateDecryptionData", data)
    counts: dict[str, int] = {}
    for item in found.iter():
        if local(item.tag) == "ServerSyncUpdateFileDecryption":
            uid = (_text(item, "UpdateID") or "").lower()
            keys = sum(1 for k in item.iter() if local(k.tag) == "DecryptionKey")
            counts[uid] = counts.get(uid, 0) + keys
    return counts


def _revision_id(element: Element, operation: str) -> RevisionId:
    uid = (_text(element, "UpdateID") or "").lower()
    number = _text(element, "RevisionNumber") or ""
    if not uid or not number.isdigit():
        raise SourceError(f"WSUS {operation} answer: malformed update identity")
    return RevisionId(uid, int(number))


def _child(element: Element, name: str) -> Element | None:
    return next((c for c in element if local(c.tag) == name), None)


def _text(element: Element, name: str) -> str | None:
    found = _child(element, name)
    return (found.text or "").strip() if found is not None else None


def _int(text: str | None, default: int) -> int:
    return int(text) if text and text.isdigit() and int(text) > 0 else default


def _b64(text: str, what: str) -> str:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SourceError(f"WSUS answer: {what} is not base64") from None
    return text
