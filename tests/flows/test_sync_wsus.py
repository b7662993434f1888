"""`--upstream wsus`: patchflow as a downstream server of a WSUS server over [MS-WSUSSS].

No WSUS can run here, so the upstream is tests/support/wsus_server.py, a protocol-level server whose
answers follow the specification's examples and schema. Covered: the operation sequence and
batching, the mapping to catalog fields, incremental reruns, cookie renewal, compressed
metadata, encrypted files (GetUpdateDecryptionData), content download, and bad answers that
must fail the sync with their reason and store nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.wsus_server import FakeWsus, payload, software_xml, uid

pytestmark = pytest.mark.usefixtures("prefect")


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    from patchflow.ops import tls

    cert, key = tmp_path / "wsus.crt", tmp_path / "wsus.key"
    tls.generate_self_signed("localhost", cert, key)
    return cert, key


@pytest.fixture
def wsus(tls_pair: tuple[Path, Path]) -> Iterator[FakeWsus]:
    with FakeWsus().running(*tls_pair) as server:
        yield server


def _add(cli, home: Path, wsus: FakeWsus, cert: Path) -> None:
    assert cli("init").code == 0
    from patchflow import config

    config.write_config({"wsus": {"ca_file": str(cert)}})
    result = cli("server", "add", "local", "--host", "patch.corp", "--upstream", "wsus",
                 "--wsus-url", wsus.url, "--winget-source", "none")
    assert result.code == 0, result.err


def _status(cli) -> dict:
    return json.loads(cli("server", "list", "--json").out)[0]


def _patches(cli, *args: str) -> dict[str, dict]:
    result = cli("patches", "list", "--json", *args)
    assert result.code == 0, result.err
    return {p["kb"] or p["title"]: p for p in json.loads(result.out)}


def test_sync_from_a_wsus_server(cli, home: Path, wsus: FakeWsus, tls_pair) -> None:
    _add(cli, home, wsus, tls_pair[0])
    # The WSUS administrator chose what is synchronised: patchflow's filters do not apply.
    assert cli("server", "filters", "local", "--categories", "Tools").code == 0
    result = cli("sync", "local")
    assert result.code == 0, result.out
    status = _status(cli)
    assert status["sync_status"] == "Successful" and "(6 patches)" in status["sync_message"]
    assert wsus.calls[:6] == ["GetAuthConfig", "GetAuthorizationCookie", "GetCookie",
                              "GetConfigData", "GetRevisionIdList", "GetUpdateData"]
    assert wsus.calls.count("GetRevisionIdList") == 2
    assert wsus.calls.count("GetUpdateData") == 3 + 3  # 7 categories, 7 updates; batches of 3
    assert wsus.calls.count("GetUpdateDecryptionData") == 1

    patches = _patches(cli, "--server", "local")
    assert set(patches) == {"KB5034123", "KB5033375", "KB5034500", "KB2267602", "KB5099999",
                            "Intel - Display - 31.0.101.4502"}
    cu = json.loads(cli("patches", "show", "KB5034123", "--json").out)
    assert cu["title"] == "2024-01 Cumulative Update for Windows 11 (KB5034123)"  # English
    assert cu["severity"] == "Critical" and cu["category"] == "Security Updates"
    assert cu["restart_required"] == "Required"  # its bundled update: AlwaysRequiresReboot
    assert [p["name"] for p in cu["products"]] == ["Windows 11"]
    assert cu["cves"] == ["CVE-2024-20653"]
    (msu,) = cu["installers"]
    assert msu["url"].startswith(wsus.url + "/Content/") and msu["url"].endswith(".msu")
    assert patches["KB5033375"]["superseded_by"] == cu["id"]
    assert patches["KB5033375"]["restart_required"] == "May Require"
    assert patches["KB5034500"]["category"] == "Critical Updates"
    assert patches["KB5034500"]["eula_required"] is True
    assert patches["KB5034500"]["products"][0]["name"] == "Windows Server 2022"
    assert patches["KB2267602"]["restart_required"] == "Not Required"
    assert patches["KB2267602"]["category"] == "Definition Updates"
    assert patches["Intel - Display - 31.0.101.4502"]["category"] == "Drivers"
    preview = json.loads(cli("patches", "show", "KB5099999", "--json").out)
    assert preview["installers"] == []  # encrypted: not offered as an installer

    # Content comes from the WSUS content service, checked by SHA-256.
    from patchflow.catalog.content_source import fetch_content

    assert fetch_content(msu["sha256"], "local").read_bytes() == payload(11)

    # A rerun fetches no metadata; a new revision and a new update are fetched alone.
    calls = len(wsus.calls)
    assert cli("sync", "local").code == 0
    assert "GetUpdateData" not in wsus.calls[calls:]
    wsus.revisions[-7].number = 201  # KB5034123 republished
    wsus.revisions[-7].xml = wsus.revisions[-7].xml.replace('RevisionNumber="200"',
                                                            'RevisionNumber="201"')
    from tests.support.wsus_server import Revision

    wsus.revisions.append(Revision(uid(7), 200, software_xml(
        uid(7), 200, "2024-02 Cumulative Update for Windows 11 (KB5034765)", kb="5034765",
        severity="Critical", supersedes=(uid(1),), reboot="AlwaysRequiresReboot"), False))
    calls = len(wsus.calls)
    assert cli("sync", "local").code == 0
    assert wsus.calls[calls:].count("GetUpdateData") == 1
    patches = _patches(cli)
    assert patches["KB5034123"]["superseded_by"] == patches["KB5034765"]["id"]


@pytest.mark.skipif(shutil.which("cabextract") is None, reason="cabextract is not installed")
def test_compressed_metadata_and_an_expired_cookie(cli, sqlite_home: Path, tls_pair) -> None:
    wsus = FakeWsus(compressed={uid(1), uid(3)}, expire_cookie_once=True)
    with wsus.running(*tls_pair):
        _add(cli, sqlite_home, wsus, tls_pair[0])
        result = cli("sync", "local")
        assert result.code == 0, result.out
        assert wsus.calls.count("GetCookie") == 2  # renewed after InvalidCookie
    patches = _patches(cli)
    assert patches["KB5034123"]["severity"] == "Critical"
    assert patches["KB5034500"]["eula_required"] is True


@pytest.mark.parametrize("failure, reason", [
    ({"garbage": {"GetUpdateData": b"<html><body>Service Unavailable</body></html>"}},
     "WSUS GetUpdateData answer: not a SOAP envelope"),
    ({"cut": {"GetRevisionIdList"}}, "WSUS GetRevisionIdList: the answer was cut off"),
    ({"faults": {"GetConfigData": "InternalServerError"}},
     "WSUS refused GetConfigData: InternalServerError (injected)"),
    ({"drop_from_update_data": {uid(3)}}, "GetUpdateData left out 1 of 3 requested updates"),
    ({"garbage": {"GetCookie": b"<soap:Envelope xmlns:soap='http://schemas.xmlsoap.org/soap/"
                               b"envelope/'><soap:Body><GetCookieResponse><GetCookieResult>"
                               b"<Expiration>x</Expiration><EncryptedData>!!</EncryptedData>"
                               b"</GetCookieResult></GetCookieResponse></soap:Body>"
                               b"</soap:Envelope>"}},
     "EncryptedData is not base64"),
])
def test_bad_answers_fail_with_the_reason_and_store_nothing(
    cli, sqlite_home: Path, tls_pair, failure: dict, reason: str
) -> None:
    wsus = FakeWsus(**failure)
    with wsus.running(*tls_pair):
        _add(cli, sqlite_home, wsus, tls_pair[0])
        result = cli("sync", "local")
    assert result.code == 1
    assert "Traceback" not in result.out + result.err
    status = _status(cli)
    assert status["sync_status"] == "Failed" and reason in status["sync_message"], status
    assert status["patches"] == 0 and _patches(cli) == {}


def test_an_unreachable_or_untrusted_wsus_fails_in_one_line(cli, sqlite_home: Path,
                                                            tls_pair) -> None:
    wsus = FakeWsus()
    with wsus.running(*tls_pair):
        assert cli("init").code == 0
        assert cli("server", "add", "local", "--host", "h", "--upstream", "wsus", "--wsus-url",
                   wsus.url, "--winget-source", "none").code == 0
        result = cli("sync", "local")  # no [wsus] ca_file: the certificate is not trusted
    assert result.code == 1
    message = _status(cli)["sync_message"]
    assert "WSUS GetAuthConfig: TLS error" in message and "\n" not in message
    assert cli("server", "add", "w2", "--host", "h", "--upstream", "wsus").code == 2
