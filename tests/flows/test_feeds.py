"""`patchflow feeds ...` end to end on SQLite and MariaDB: the real KEV, Mozilla and NVD files as
offline sources, the same files online over a real loopback HTTP server (an NVD API that pages
with startIndex and filters by virtualMatchString and lastModStartDate), and bad documents that
fail alone without losing what was stored."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import shared_fixtures
from tests.support.httpserver import authenticated_proxy, serve_files, serving
from tests.support.report_seed import sql_rows

pytestmark = pytest.mark.usefixtures("prefect")


def _feeds(cli) -> dict[str, dict]:
    r = cli("feeds", "list", "--json")
    assert r.code == 0, r.err
    return {f["name"]: f for f in json.loads(r.out)}


def test_defaults_set_and_usage_errors(cli, home: Path, tmp_path: Path) -> None:
    assert cli("init").code == 0
    feeds = _feeds(cli)
    assert list(feeds) == ["kev", "mozilla", "nvd"]
    assert all(f["status"] == "Never" and f["records"] == 0 for f in feeds.values())
    assert feeds["nvd"]["source"].startswith("https://services.nvd.nist.gov/")
    assert cli("feeds", "set", "kev", "--source", "none").code == 0
    assert _feeds(cli)["kev"]["source"] == "none"
    assert cli("feeds", "set", "nvd", "--source", str(tmp_path)).code == 0
    assert _feeds(cli)["nvd"]["source"] == str(tmp_path.resolve())
    for args in (("feeds", "set", "osv", "--source", "none"),
                 ("feeds", "set", "kev", "--source", "ftp://x/y"),
                 ("feeds", "set", "kev", "--source", str(tmp_path / "absent")),
                 ("feeds", "sync", "osv"),
                 ("feeds", "cpe", "set", "7zip.7zip", "not a cpe"),
                 ("feeds", "cpe", "set", "bad id!", "a:b")):
        r = cli(*args)
        assert r.code == 2 and r.err.startswith("error: ") and r.err.count("\n") == 1, args


def test_cpe_mapping_builtin_and_custom(cli, home: Path) -> None:
    assert cli("init").code == 0
    rows = {r["package_id"]: r for r in json.loads(cli("feeds", "cpe", "list", "--json").out)}
    assert rows["7zip.7zip"] == {"package_id": "7zip.7zip", "cpe": "7-zip:7-zip",
                                 "origin": "built-in"}
    from sources.winget import DEFAULT_PACKAGES
    assert set(DEFAULT_PACKAGES) <= set(rows)
    assert cli("feeds", "cpe", "set", "WinSCP.WinSCP", "cpe:2.3:a:winscp:winscp:*").code == 0
    assert cli("feeds", "cpe", "set", "7zip.7zip", "7-Zip:7-Zip").code == 0
    rows = {r["package_id"]: r for r in json.loads(cli("feeds", "cpe", "list", "--json").out)}
    assert rows["WinSCP.WinSCP"]["cpe"] == "winscp:winscp"
    assert rows["7zip.7zip"] == {"package_id": "7zip.7zip", "cpe": "7-zip:7-zip",
                                 "origin": "custom"}


def test_offline_sync_of_the_real_feeds(cli, home: Path, db_url: str, tmp_path: Path) -> None:
    vuln = shared_fixtures("vuln")
    assert cli("init").code == 0
    kev_file = next((vuln / "kev").glob("*.json.gz"))
    assert cli("feeds", "set", "kev", "--source", str(kev_file)).code == 0
    assert cli("feeds", "set", "mozilla", "--source", str(vuln / "mozilla")).code == 0
    assert cli("feeds", "set", "nvd", "--source", str(vuln / "nvd")).code == 0
    r = cli("feeds", "sync", "--json")
    assert r.code == 0, r.out + r.err
    said = json.loads(r.out)
    assert [(o["name"], o["status"]) for o in said] == [
        ("kev", "Successful"), ("mozilla", "Successful"), ("nvd", "Successful")]
    assert said[0]["message"].startswith("1404 KEV entries")
    feeds = _feeds(cli)
    assert {f["status"] for f in feeds.values()} == {"Successful"}
    assert feeds["kev"]["records"] == 1404
    assert feeds["nvd"]["records"] == 28
    # distinct CVE keys over all files: grep -h "^  CVE-" */*.yml | sort -u | wc -l
    assert feeds["mozilla"]["records"] == 408 and feeds["mozilla"]["timestamp"]
    assert "168 advisories" in feeds["mozilla"]["message"]
    dates = sql_rows(db_url, "SELECT kev_date_added, kev_due_date FROM vulnerabilities "
                     "WHERE cve='CVE-2025-0411' AND source='kev'")
    assert [tuple(str(d) for d in row) for row in dates] == [("2025-02-06", "2025-02-27")]
    assert sql_rows(db_url, "SELECT vendor_rating FROM vulnerabilities "
                    "WHERE cve='CVE-2025-4918' AND source='mozilla'") == [("critical",)]
    assert sql_rows(db_url, "SELECT end_excluding FROM vulnerability_ranges "
                    "WHERE cve='CVE-2024-11477' AND package='7-zip:7-zip'") == [("24.07",)]

    # A truncated advisory and a hostile record fail alone; what they gave before stays.
    moz = tmp_path / "moz"
    shutil.copytree(vuln / "mozilla", moz)
    (moz / "2025" / "mfsa2025-36.yml").write_bytes(b"advisories:\n  CVE-2025-4918: [unclosed")
    nvd_dir = tmp_path / "nvd"
    shutil.copytree(vuln / "nvd", nvd_dir)
    raw = (nvd_dir / "CVE-2024-11477.json").read_bytes()
    (nvd_dir / "CVE-2024-11477.json").write_bytes(raw[: len(raw) // 3])
    assert cli("feeds", "set", "mozilla", "--source", str(moz)).code == 0
    assert cli("feeds", "set", "nvd", "--source", str(nvd_dir)).code == 0
    r = cli("feeds", "sync", "mozilla", "nvd")
    assert r.code == 1
    assert "mfsa2025-36: malformed YAML" in r.out and "CVE-2024-11477.json" in r.out
    assert "Traceback" not in r.out + r.err
    feeds = _feeds(cli)
    assert feeds["mozilla"]["status"] == "Failed" and feeds["nvd"]["status"] == "Failed"
    assert feeds["nvd"]["records"] == 28  # the truncated file's CVE keeps its stored rows
    assert sql_rows(db_url, "SELECT vendor_rating FROM vulnerabilities "
                    "WHERE cve='CVE-2025-4918' AND source='mozilla'") == [("critical",)]
    assert ("mfsa2025-36",) in sql_rows(db_url, "SELECT document FROM vulnerability_ranges "
                                        "WHERE cve='CVE-2025-4918'")
    assert sql_rows(db_url, "SELECT end_excluding FROM vulnerability_ranges "
                    "WHERE cve='CVE-2024-11477' AND package='7-zip:7-zip'") == [("24.07",)]
    assert _feeds(cli)["kev"]["records"] == 1404  # not named: untouched


class NvdApi:
    """A loopback NVD CVE API 2.0 serving the fixture records: virtualMatchString filters by
    CPE vendor:product, startIndex/resultsPerPage page, lastModStartDate filters by date."""

    def __init__(self, records: list[dict], page_size: int = 2) -> None:
        self.records = records
        self.page_size = page_size
        self.requests: list[dict[str, list[str]]] = []
        self.headers: list[dict[str, str]] = []
        self.refuse = 0  # answer this many next requests with 403, as NVD's rate limit does

    def answer(self, query: dict[str, list[str]]) -> dict:
        match = query.get("virtualMatchString", [""])[0]
        vendor_product = ":".join(match.split(":")[3:5])
        hits = [r for r in self.records if vendor_product and vendor_product in
                json.dumps(r.get("configurations", [])).replace("\\\\", "")]
        if "lastModStartDate" in query:
            since = query["lastModStartDate"][0][:19]
            hits = [r for r in hits if r["lastModified"][:19] >= since]
        start = int(query.get("startIndex", ["0"])[0])
        page = hits[start:start + self.page_size]
        return {"resultsPerPage": len(page), "startIndex": start, "totalResults": len(hits),
                "format": "NVD_CVE", "version": "2.0",
                "vulnerabilities": [{"cve": r} for r in page]}


@contextmanager
def serve_nvd(api: NvdApi) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            api.requests.append(query)
            api.headers.append(dict(self.headers.items()))
            if api.refuse:
                api.refuse -= 1
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = json.dumps(api.answer(query)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Handler) as url:
        yield f"{url}/rest/json/cves/2.0"


def _archive(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname="foundation-security-advisories-master/announce")
    return buffer.getvalue()


def test_online_sync_over_loopback(cli, home: Path, db_url: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    vuln = shared_fixtures("vuln")
    assert cli("init").code == 0
    monkeypatch.setenv("PATCHFLOW_NVD_DELAY", "0.2")
    monkeypatch.setenv("NVD_API_KEY", "test-key-123")
    records = [json.loads(p.read_bytes()) for p in sorted((vuln / "nvd").glob("*.json"))]
    api = NvdApi(records)
    with serve_files() as files, serve_nvd(api) as nvd_url:
        files.files["/kev.json.gz"] = next((vuln / "kev").glob("*.json.gz")).read_bytes()
        files.files["/master.tar.gz"] = _archive(vuln / "mozilla")
        assert cli("feeds", "set", "kev", "--source", f"{files.url}/kev.json.gz").code == 0
        assert cli("feeds", "set", "mozilla", "--source", f"{files.url}/master.tar.gz").code == 0
        assert cli("feeds", "set", "nvd", "--source", nvd_url).code == 0
        r = cli("feeds", "sync")
        assert r.code == 0, r.out + r.err
        feeds = _feeds(cli)
        assert feeds["kev"]["records"] == 1404
        assert "168 advisories" in feeds["mozilla"]["message"]
        assert "full" in feeds["nvd"]["message"]
        # Each of the 10 mapped CPEs queried; 7-Zip's 5 matching records come in 3 pages.
        zip_pages = [q["startIndex"][0] for q in api.requests
                     if q["virtualMatchString"] == ["cpe:2.3:a:7-zip:7-zip"]]
        assert zip_pages == ["0", "2", "4"]
        assert all(h.get("apiKey") == "test-key-123" for h in api.headers)
        assert all("lastModStartDate" not in q for q in api.requests)
        stored = {c for (c,) in sql_rows(db_url, "SELECT cve FROM vulnerabilities "
                                          "WHERE source='nvd'")}
        assert "CVE-2024-11477" in stored and "CVE-2024-9680" in stored
        assert "CVE-2023-40481" not in stored  # no configurations: no CPE matches it

        api.requests.clear()
        r = cli("feeds", "sync", "nvd")
        assert r.code == 0, r.out + r.err
        assert api.requests and all("lastModStartDate" in q for q in api.requests)
        assert "changes since" in _feeds(cli)["nvd"]["message"]

        files.status["/kev.json.gz"] = 503
        r = cli("feeds", "sync", "kev")
        assert r.code == 1 and "Traceback" not in r.out + r.err
        kev = _feeds(cli)["kev"]
        assert kev["status"] == "Failed" and kev["records"] == 1404


def test_nvd_rate_limit_is_waited_out_then_reported(cli, home: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """NVD answers 403 when its rolling window is full: a few are waited out and the sync
    succeeds; a limit that never lifts fails the feed with one line and keeps what it holds."""
    vuln = shared_fixtures("vuln")
    assert cli("init").code == 0
    monkeypatch.setenv("PATCHFLOW_NVD_DELAY", "0.05")
    api = NvdApi([json.loads(p.read_bytes()) for p in sorted((vuln / "nvd").glob("*.json"))])
    with serve_nvd(api) as nvd_url:
        assert cli("feeds", "set", "nvd", "--source", nvd_url).code == 0
        api.refuse = 2
        r = cli("feeds", "sync", "nvd")
        assert r.code == 0, r.out + r.err
        nvd = _feeds(cli)["nvd"]
        held = nvd["records"]
        assert nvd["status"] == "Successful" and held > 20
        first = api.requests[0]
        assert api.requests[:3] == [first, first, first]  # the refused page, asked again

        api.refuse = 1000
        r = cli("feeds", "sync", "nvd")
        assert r.code == 1 and "Traceback" not in r.out + r.err
        nvd = _feeds(cli)["nvd"]
        assert nvd["status"] == "Failed" and nvd["records"] == held
        assert "HTTP 403" in nvd["message"] and "rate limit" in nvd["message"]
        assert "\n" not in nvd["message"]


def test_feeds_go_through_the_local_servers_proxy(cli, home: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The feeds use the proxy (and its credentials) of the patch server `[feeds]
    proxy_server` names, `local` by default; a refused password fails the feed without
    printing the password."""
    vuln = shared_fixtures("vuln")
    assert cli("init").code == 0
    with serve_files() as files, authenticated_proxy("svc", "s3cret-pw") as proxy:
        files.files["/kev.json.gz"] = next((vuln / "kev").glob("*.json.gz")).read_bytes()
        monkeypatch.setenv("PATCHFLOW_PROXY_PASSWORD", "s3cret-pw")
        r = cli("server", "add", "local", "--host", "patch.corp.example", "--msrc-source",
                str(vuln), "--winget-source", "none", "--proxy", str(proxy["url"]),
                "--proxy-user", "svc")
        assert r.code == 0, r.out + r.err
        assert cli("feeds", "set", "kev", "--source", f"{files.url}/kev.json.gz").code == 0
        r = cli("feeds", "sync", "kev")
        assert r.code == 0, r.out + r.err
        assert proxy["seen"] == 1 and _feeds(cli)["kev"]["records"] == 1404

        monkeypatch.setenv("PATCHFLOW_PROXY_PASSWORD", "wrong-pw")
        assert cli("server", "edit", "local", "--proxy-user", "svc").code == 0
        r = cli("feeds", "sync", "kev")
        assert r.code == 1
        kev = _feeds(cli)["kev"]
        assert kev["status"] == "Failed" and kev["records"] == 1404
        assert "proxy" in kev["message"] and "pw" not in kev["message"]
        assert proxy["refused"] >= 1 and proxy["seen"] == 1

        with (home / "patchflow.toml").open("a") as config:
            config.write('\n[feeds]\nproxy_server = "none"\n')
        assert cli("feeds", "sync", "kev").code == 0  # straight to the loopback source
        assert proxy["seen"] == 1 and _feeds(cli)["kev"]["status"] == "Successful"
