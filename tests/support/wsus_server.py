"""A protocol-level WSUS upstream server ([MS-WSUSSS]) for tests: no WSUS can run here.

It answers the SOAP operations a downstream server uses, shaped like the specification's own
examples (section 4: the GetAuthConfig answer with LastChange 2006-06-07T20:41:50.883Z and the
"DssTargeting" plug-in at DssAuthWebService/DssAuthWebService.asmx, cookies with Expiration and
EncryptedData, SOAP faults carrying an ErrorCode in their detail), over HTTPS on loopback. It
checks what the specification makes the upstream check (SOAPAction, the cookie it issued,
batch sizes up to MaxNumberOfUpdatesPerRequest) and serves content at /Content/XX/SHA1.ext.
Knobs inject the failures a real server or network produces.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from xml.sax.saxutils import escape

import defusedxml.ElementTree as DefusedET

from tests.support.cabfile import write_cab
from tests.support.httpserver import serving

UPD = "http://schemas.microsoft.com/msus/2002/12/Update"
SOAP_ENV = ('<?xml version="1.0" encoding="utf-8"?><soap:Envelope '
            'xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema"><soap:Body>{}</soap:Body>'
            "</soap:Envelope>")
NS = "http://www.microsoft.com/SoftwareDistribution"
AUTH_NS = "http://www.microsoft.com/SoftwareDistribution/Server/DssAuthWebService"
SECURITY, CRITICAL, DEFINITIONS, DRIVERS = (
    "0fa1201d-4330-4fa8-8ae9-b877473b6441", "e6cf1350-c01b-414d-a61f-263d14d133b4",
    "e0789628-ce08-4437-be74-2495b842f43b", "ebfc1fc5-71a4-4f7b-9aca-3b9a503104a0")
WIN11, SERVER22 = "72e7624a-5b00-45d2-b92f-e561c0a6a160", "a4e7ef2f-7a43-4bd3-9a4f-0c3a9c1b4a22"


def uid(n: int) -> str:
    return f"{n:08x}-1111-4111-8111-{n:012x}"


def payload(n: int) -> bytes:
    return f"wsus file {n}\n".encode() * 40


@dataclass
class Revision:
    update_id: str
    number: int
    xml: str
    config: bool  # returned by GetRevisionIdList(GetConfig=true)


def category_xml(guid: str, title: str, kind: str | None) -> str:
    info = (f'<upd:HandlerSpecificData xsi:type="cat:Category"><cat:CategoryInformation '
            f'CategoryType="{kind}" ProhibitsSubcategories="false" ProhibitsUpdates="false" '
            'DisplayOrder="0" /></upd:HandlerSpecificData>') if kind else ""
    update_type = "Category" if kind else "Detectoid"
    return (f'<upd:Update xmlns:upd="{UPD}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:cat="http://schemas.microsoft.com/msus/2002/12/UpdateHandlers/Category">'
            f'<upd:UpdateIdentity UpdateID="{guid}" RevisionNumber="100" />'
            f'<upd:Properties UpdateType="{update_type}" />'
            "<upd:LocalizedPropertiesCollection><upd:LocalizedProperties><upd:Language>en"
            f"</upd:Language><upd:Title>{escape(title)}</upd:Title></upd:LocalizedProperties>"
            f"</upd:LocalizedPropertiesCollection>{info}</upd:Update>")


def software_xml(guid: str, number: int, title: str, *, kb: str | None = None,
                 product: str = WIN11, classification: str = SECURITY,
                 severity: str | None = None, reboot: str | None = None,
                 supersedes: tuple[str, ...] = (), bundled: tuple[str, ...] = (),
                 files: tuple[int, ...] = (), language: str | None = None, eula: bool = False,
                 cves: tuple[str, ...] = (), update_type: str = "Software",
                 encrypted: bool = False) -> str:
    props = f'UpdateType="{update_type}" CreationDate="2024-01-09T17:00:00Z"'
    if severity:
        props += f' MsrcSeverity="{severity}"'
    inner = f'<upd:InstallationBehavior RebootBehavior="{reboot}" />' if reboot else ""
    inner += f"<upd:KBArticleID>{kb}</upd:KBArticleID>" if kb else ""
    inner += "".join(f"<upd:CveID>{c}</upd:CveID>" for c in cves)
    inner += f"<upd:Language>{language}</upd:Language>" if language else ""
    inner += ('<upd:EulaFile FileDigest="ZXVsYQ==" FileName="eula.txt" Size="4">'
              "<upd:Language>en</upd:Language></upd:EulaFile>") if eula else ""
    rel = ('<upd:Prerequisites><upd:AtLeastOne IsCategory="true"><upd:UpdateIdentity UpdateID="'
           f'{product}" /></upd:AtLeastOne><upd:AtLeastOne IsCategory="true"><upd:UpdateIdentity '
           f'UpdateID="{classification}" /></upd:AtLeastOne></upd:Prerequisites>')
    if bundled:
        rel += "<upd:BundledUpdates>" + "".join(
            f'<upd:UpdateIdentity UpdateID="{b}" RevisionNumber="100" />' for b in bundled) + \
            "</upd:BundledUpdates>"
    if supersedes:
        rel += "<upd:SupersededUpdates>" + "".join(
            f'<upd:UpdateIdentity UpdateID="{s}" />' for s in supersedes) + \
            "</upd:SupersededUpdates>"
    file_xml = ""
    for n in files:
        data = payload(n)
        sha1 = base64.b64encode(hashlib.sha1(data).digest()).decode()
        sha256 = base64.b64encode(hashlib.sha256(data).digest()).decode()
        extra = ' IsEncrypted="true"' if encrypted else ""
        file_xml += (f'<upd:File Digest="{sha1}" DigestAlgorithm="SHA1" FileName="windows11.0-'
                     f'kb{kb or n}-x64_{n}.msu" Size="{len(data)}" Modified="2024-01-05T10:00:00Z"'
                     f'{extra}><upd:AdditionalDigest Algorithm="SHA256">{sha256}'
                     "</upd:AdditionalDigest></upd:File>")
    titles = (f"<upd:LocalizedProperties><upd:Language>de</upd:Language><upd:Title>"
              f"{escape(title)} (Deutsch)</upd:Title></upd:LocalizedProperties>"
              f"<upd:LocalizedProperties><upd:Language>en</upd:Language><upd:Title>"
              f"{escape(title)}</upd:Title><upd:Description>About {escape(title)}"
              "</upd:Description></upd:LocalizedProperties>")
    return (f'<upd:Update xmlns:upd="{UPD}"><upd:UpdateIdentity UpdateID="{guid}" '
            f'RevisionNumber="{number}" /><upd:Properties {props}>{inner}</upd:Properties>'
            f"<upd:LocalizedPropertiesCollection>{titles}</upd:LocalizedPropertiesCollection>"
            f"<upd:Relationships>{rel}</upd:Relationships>"
            f"<upd:Files>{file_xml}</upd:Files></upd:Update>")


def standard_catalog() -> list[Revision]:
    """Categories, a detectoid, and software updates covering the mapped fields."""
    revs = [Revision(g, 100, category_xml(g, t, k), True) for g, t, k in (
        (SECURITY, "Security Updates", "UpdateClassification"),
        (CRITICAL, "Critical Updates", "UpdateClassification"),
        (DEFINITIONS, "Definition Updates", "UpdateClassification"),
        (DRIVERS, "Drivers", "UpdateClassification"),
        (WIN11, "Windows 11", "Product"),
        (SERVER22, "Windows Server 2022", "Product"),
        (uid(99), "Windows 11 detectoid", None),
    )]
    software = [
        (uid(1), software_xml(uid(1), 200, "2024-01 Cumulative Update for Windows 11 (KB5034123)",
                              kb="5034123", severity="Critical", bundled=(uid(11),),
                              supersedes=(uid(2),), cves=("CVE-2024-20653",))),
        (uid(11), software_xml(uid(11), 100, "KB5034123 x64 package", files=(11,),
                               reboot="AlwaysRequiresReboot")),
        (uid(2), software_xml(uid(2), 200, "2023-12 Cumulative Update for Windows 11 (KB5033375)",
                              kb="5033375", severity="Important", reboot="CanRequestReboot")),
        (uid(3), software_xml(uid(3), 200, "Critical Update for Windows Server 2022 (KB5034500)",
                              kb="5034500", product=SERVER22, classification=CRITICAL,
                              reboot="AlwaysRequiresReboot", eula=True)),
        (uid(4), software_xml(uid(4), 200, "Security Intelligence Update - KB2267602",
                              kb="2267602", classification=DEFINITIONS, reboot="NeverReboots",
                              language="de")),
        (uid(5), software_xml(uid(5), 200, "Intel - Display - 31.0.101.4502", product=WIN11,
                              classification=DRIVERS, reboot="CanRequestReboot",
                              update_type="Driver")),
        (uid(6), software_xml(uid(6), 200, "Preview Update for Windows 11 (KB5099999)",
                              kb="5099999", files=(6,), encrypted=True,
                              reboot="CanRequestReboot")),
    ]
    return revs + [Revision(g, int(x.split('RevisionNumber="')[1].split('"')[0]), x, False)
                   for g, x in software]


@dataclass
class FakeWsus:
    revisions: list[Revision] = field(default_factory=standard_catalog)
    max_updates: int = 3
    compressed: set[str] = field(default_factory=set)  # update ids sent compressed
    calls: list[str] = field(default_factory=list)
    # Failure knobs: operation -> what to answer instead.
    garbage: dict[str, bytes] = field(default_factory=dict)
    cut: set[str] = field(default_factory=set)
    faults: dict[str, str] = field(default_factory=dict)  # operation -> ErrorCode
    expire_cookie_once: bool = False
    drop_from_update_data: set[str] = field(default_factory=set)
    url: str = ""
    _cookies: set[str] = field(default_factory=set)

    def files(self) -> dict[str, bytes]:
        """/Content paths -> bytes, as the USS content download service lays them out."""
        found = {}
        for n in (6, 11):
            data = payload(n)
            sha1 = hashlib.sha1(data).hexdigest().upper()
            found[f"/Content/{sha1[-2:]}/{sha1}.msu"] = data
        return found

    # --- SOAP ----------------------------------------------------------------------------

    def answer(self, path: str, action: str, body: bytes) -> tuple[int, bytes]:
        root = DefusedET.fromstring(body)
        request = next(iter(next(iter(root))))  # Envelope/Body/<Operation>
        operation = request.tag.rsplit("}", 1)[-1]
        self.calls.append(operation)
        namespace = AUTH_NS if operation == "GetAuthorizationCookie" else NS
        if action.strip('"') != f"{namespace}/{operation}":
            return self._fault(operation, "InvalidParameters", "SOAPAction does not match")
        expected = "DssAuthWebService" if operation == "GetAuthorizationCookie" else \
            "ServerSyncWebService"
        if expected not in path:
            return 404, b"not found"
        if operation in self.garbage:
            return 200, self.garbage[operation]
        if operation in self.faults:
            return self._fault(operation, self.faults[operation], "injected")
        if operation not in ("GetAuthConfig", "GetAuthorizationCookie", "GetCookie"):
            cookie = request.find(f"{{{NS}}}cookie/{{{NS}}}EncryptedData")
            if cookie is None or cookie.text not in self._cookies:
                return self._fault(operation, "InvalidCookie", "cookie not issued here")
            if self.expire_cookie_once and operation == "GetUpdateData":
                self.expire_cookie_once = False
                self._cookies.clear()
                return self._fault(operation, "InvalidCookie", "The cookie has expired")
        handler = getattr(self, f"_{operation}", None)
        if handler is None:
            return self._fault(operation, "InvalidParameters", "operation not supported")
        return handler(request)

    def _ok(self, operation: str, inner: str, namespace: str = NS) -> tuple[int, bytes]:
        body = (f'<{operation}Response xmlns="{namespace}"><{operation}Result>{inner}'
                f"</{operation}Result></{operation}Response>")
        return 200, SOAP_ENV.format(body).encode()

    def _fault(self, operation: str, code: str, message: str) -> tuple[int, bytes]:
        body = ("<soap:Fault><faultcode>soap:Client</faultcode><faultstring>Fault occurred"
                f"</faultstring><detail><ErrorCode>{code}</ErrorCode><Message>{message}"
                f"</Message><ID>5d1b1a24-1f07-4dd7-b0e9-9b3bd2c2f8a1</ID><Method>\"{NS}/"
                f'{operation}"</Method></detail></soap:Fault>')
        return 500, SOAP_ENV.format(body).encode()

    def _GetAuthConfig(self, request: object) -> tuple[int, bytes]:
        return self._ok("GetAuthConfig", (
            "<LastChange>2006-06-07T20:41:50.883Z</LastChange><AuthInfo><AuthPlugInInfo>"
            "<PlugInID>DssTargeting</PlugInID><ServiceUrl>DssAuthWebService/DssAuthWebService"
            ".asmx</ServiceUrl></AuthPlugInInfo></AuthInfo>"))

    def _GetAuthorizationCookie(self, request: object) -> tuple[int, bytes]:
        return self._ok("GetAuthorizationCookie", (
            "<PlugInId>DssTargeting</PlugInId><CookieData>"
            + base64.b64encode(b"auth-cookie").decode() + "</CookieData>"), AUTH_NS)

    def _GetCookie(self, request: object) -> tuple[int, bytes]:
        token = base64.b64encode(f"cookie-{len(self.calls)}".encode()).decode()
        self._cookies.add(token)
        return self._ok("GetCookie", "<Expiration>2099-01-01T00:00:00Z</Expiration>"
                                     f"<EncryptedData>{token}</EncryptedData>")

    def _GetConfigData(self, request: object) -> tuple[int, bytes]:
        return self._ok("GetConfigData", (
            "<CatalogOnlySync>false</CatalogOnlySync><LazySync>true</LazySync>"
            "<ServerHostsPsfFiles>false</ServerHostsPsfFiles>"
            f"<MaxNumberOfUpdatesPerRequest>{self.max_updates}</MaxNumberOfUpdatesPerRequest>"
            "<MaxNumberOfDriverSetsPerRequest>50</MaxNumberOfDriverSetsPerRequest>"
            "<MaxNumberOfComputerIdsInRequest>50</MaxNumberOfComputerIdsInRequest>"
            "<MaxNumberOfPnpHardwareIdsInRequest>50</MaxNumberOfPnpHardwareIdsInRequest>"
            "<ProtocolVersion>1.20</ProtocolVersion><LanguageUpdateList><ServerSyncLanguageData>"
            "<LanguageID>1033</LanguageID><ShortLanguage>en</ShortLanguage><LongLanguage>English"
            "</LongLanguage><Enabled>true</Enabled></ServerSyncLanguageData></LanguageUpdateList>"
            "<MaxUpdatesPerRequestInGetUpdateDecryptionData>2"
            "</MaxUpdatesPerRequestInGetUpdateDecryptionData>"))

    def _GetRevisionIdList(self, request: object) -> tuple[int, bytes]:
        flag = request.find(f"{{{NS}}}filter/{{{NS}}}GetConfig")  # type: ignore[attr-defined]
        get_config = flag is not None and flag.text == "true"
        ids = "".join(f"<UpdateIdentity><UpdateID>{r.update_id}</UpdateID><RevisionNumber>"
                      f"{r.number}</RevisionNumber></UpdateIdentity>"
                      for r in self.revisions if r.config == get_config)
        return self._ok("GetRevisionIdList", f"<Anchor>1,2024-02-01 00:00:00.000</Anchor>"
                                             f"<NewRevisions>{ids}</NewRevisions>")

    def _requested(self, request: object) -> list[tuple[str, int]]:
        return [(i.findtext(f"{{{NS}}}UpdateID", ""), int(i.findtext(f"{{{NS}}}RevisionNumber",
                                                                      "0")))
                for i in request.iter(f"{{{NS}}}UpdateIdentity")]  # type: ignore[attr-defined]

    def _GetUpdateData(self, request: object) -> tuple[int, bytes]:
        wanted = self._requested(request)
        if len(wanted) > self.max_updates:
            return self._fault("GetUpdateData", "InvalidParameters", "too many updates")
        items, urls = "", ""
        for guid, number in wanted:
            rev = next((r for r in self.revisions if r.update_id == guid and r.number == number),
                       None)
            if rev is None or guid in self.drop_from_update_data:
                continue
            if guid in self.compressed:
                with tempfile.TemporaryDirectory() as tmp:
                    cab = write_cab(Path(tmp) / "blob.cab",
                                    {"blob.xml": b"\xff\xfe" + rev.xml.encode("utf-16-le")})
                    packed = base64.b64encode(cab.read_bytes()).decode()
                blob = f"<XmlUpdateBlobCompressed>{packed}</XmlUpdateBlobCompressed>"
            else:
                blob = f"<XmlUpdateBlob>{escape(rev.xml)}</XmlUpdateBlob>"
            items += (f"<ServerSyncUpdateData><Id><UpdateID>{guid}</UpdateID><RevisionNumber>"
                      f"{number}</RevisionNumber></Id>{blob}</ServerSyncUpdateData>")
            for digest in rev.xml.split('Digest="')[1:]:
                value = digest.split('"')[0]
                if value != "ZXVsYQ==":
                    urls += (f"<ServerSyncUrlData><FileDigest>{value}</FileDigest><MUUrl>http://"
                             f"download.windowsupdate.com/d/{value[:6]}.msu</MUUrl>"
                             "</ServerSyncUrlData>")
        return self._ok("GetUpdateData", f"<updates>{items}</updates><fileUrls>{urls}</fileUrls>")

    def _GetUpdateDecryptionData(self, request: object) -> tuple[int, bytes]:
        wanted = self._requested(request)
        items = "".join(f"<ServerSyncUpdateFileDecryption><UpdateID>{g}</UpdateID>"
                        "<DecryptionKey>a2V5</DecryptionKey></ServerSyncUpdateFileDecryption>"
                        for g, _n in wanted)
        return self._ok("GetUpdateDecryptionData", items)

    # --- HTTP ----------------------------------------------------------------------------

    @contextmanager
    def running(self, cert: Path, key: Path) -> Iterator[FakeWsus]:
        owner = self
        content = self.files()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: bytes, cut: bool = False) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "text/xml; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 3] if cut else body)
                if cut:
                    self.close_connection = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, answer = owner.answer(self.path, self.headers.get("SOAPAction", ""),
                                              body)
                operation = owner.calls[-1] if owner.calls else ""
                self._send(status, answer, cut=operation in owner.cut)

            def do_GET(self) -> None:
                data = content.get(self.path)
                self._send(200 if data else 404, data or b"")

        with serving(Handler, (cert, key)) as self.url:
            yield self
