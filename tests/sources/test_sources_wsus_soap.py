"""[MS-WSUSSS] messages without a server: requests as the specification shapes them, answers and
faults read into one-line outcomes, hostile XML refused."""

from __future__ import annotations

import datetime as dt

import defusedxml.ElementTree as DefusedET
import pytest

from sources import wsus_soap as soap
from sources.records import SourceError
from sources.wsus_metadata import WsusUpdate, read_update_xml
from tests.support.wsus_server import FakeWsus, software_xml, uid

COOKIE = soap.Cookie("2099-01-01T00:00:00Z", "Y29va2ll")


def _body(request: bytes) -> DefusedET.Element:
    return next(iter(next(iter(DefusedET.fromstring(request)))))


def test_requests_follow_the_schema() -> None:
    auth = _body(soap.get_authorization_cookie("branch", "0000-1"))
    assert auth.tag == f"{{{soap.NS_AUTH}}}GetAuthorizationCookie"
    assert soap.action("GetAuthorizationCookie") == f"{soap.NS_AUTH}/GetAuthorizationCookie"
    cookie = _body(soap.get_cookie("DssTargeting", "YXV0aA==", None, "2006-06-07T20:41:50.883Z",
                                   dt.datetime(2024, 1, 1, tzinfo=dt.UTC)))
    assert cookie.findtext(f"{{{soap.NS_SYNC}}}protocolVersion") == soap.PROTOCOL_VERSION
    assert cookie.find(f".//{{{soap.NS_SYNC}}}CookieData").text == "YXV0aA=="
    listing = _body(soap.get_revision_id_list(COOKIE, False, [uid(1)], [uid(2)]))
    flt = listing.find(f"{{{soap.NS_SYNC}}}filter")
    assert flt.find(f"{{{soap.NS_SYNC}}}Anchor") is None
    assert flt.findtext(f"{{{soap.NS_SYNC}}}GetConfig") == "false"
    assert [e.text for e in flt.iter(f"{{{soap.NS_SYNC}}}Id")] == [uid(1), uid(2)]
    data = _body(soap.get_update_data(COOKIE, [soap.RevisionId(uid(3), 201)]))
    identity = data.find(f".//{{{soap.NS_SYNC}}}UpdateIdentity")
    assert identity.findtext(f"{{{soap.NS_SYNC}}}RevisionNumber") == "201"


def test_answers_and_faults() -> None:
    server = FakeWsus()
    _status, answer = server.answer("/ServerSyncWebService/ServerSyncWebService.asmx",
                                    f'"{soap.NS_SYNC}/GetAuthConfig"', soap.get_auth_config())
    config = soap.read_auth_config(answer)
    assert config.plugin_id == "DssTargeting" and config.last_change.startswith("2006-06-07")
    status, fault = server.answer("/ServerSyncWebService/ServerSyncWebService.asmx",
                                  f'"{soap.NS_SYNC}/GetConfigData"',
                                  soap.get_config_data(COOKIE))
    assert status == 500
    with pytest.raises(soap.WsusFault) as caught:
        soap.read_config_data(fault)
    assert caught.value.code == "InvalidCookie"
    assert str(caught.value) == "WSUS refused GetConfigData: InvalidCookie (cookie not issued here)"
    with pytest.raises(SourceError, match="unexpected GetCookieResponse"):
        soap.read_config_data(answer.replace(b"GetAuthConfig", b"GetCookie"))
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]>'
            b"<x>&b;</x>")
    with pytest.raises(SourceError, match="refused unsafe XML"):
        soap.read_cookie(bomb)


def test_full_update_xml_reads_like_the_cab_fragments() -> None:
    xml = software_xml(uid(1), 200, "Update (KB5034123)", kb="5034123", severity="Critical",
                       reboot="CanRequestReboot", eula=True, language="de",
                       supersedes=(uid(2),), cves=("CVE-2024-1",))
    update = WsusUpdate(update_id="")
    read_update_xml(DefusedET.fromstring(xml), update)
    assert update.update_id == uid(1) and update.kb == "5034123"
    assert update.msrc_severity == "Critical" and update.reboot == "CanRequestReboot"
    assert update.eula and update.languages == {"de"}  # not the EULA's own languages
    assert update.title == "Update (KB5034123)"  # English among the localized titles
    assert update.supersedes == {uid(2)} and update.cves == {"CVE-2024-1"}
