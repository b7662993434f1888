"""Numbers and names from URLs and bodies that no column can hold get a 4xx JSON error, not a
500 with a traceback: ids past 2^63-1, exit codes past a DWORD, refs of non-ASCII digits, report
paths with NUL bytes or over-long names. Over real HTTPS, on SQLite and MariaDB."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.agent.harness import Api, json_error, running_api
from tests.server.console.test_console import add_admin, log_in

BIG = 2**63  # one past the largest BIGINT
HUGE = 2**70


@pytest.fixture(scope="module", params=["sqlite", "mariadb"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[Api]:
    with running_api(request.param, tmp_path_factory.mktemp(f"bounds-{request.param}")) as api:
        yield api


@pytest.fixture
def api(server: Api, monkeypatch: pytest.MonkeyPatch) -> Api:
    server.reset()
    monkeypatch.setenv("PATCHFLOW_HOME", str(server.home))
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", server.db_url)
    return server


@pytest.fixture
def admin(api: Api) -> Iterator[httpx.Client]:
    with api.client(headers={"Authorization": f"Bearer {api.admin_token()}"}) as client:
        yield client


@pytest.mark.parametrize("method,path", [
    ("GET", f"/api/v1/admin/install/jobs/{BIG}"),
    ("GET", f"/api/v1/admin/install/jobs/{HUGE}"),
    ("POST", f"/api/v1/admin/install/jobs/{BIG}/cancel"),
    ("DELETE", f"/api/v1/admin/enrollment-tokens/{BIG}"),
    ("DELETE", "/api/v1/admin/enrollment-tokens/0"),
])
def test_out_of_range_ids_are_422(admin: httpx.Client, method: str, path: str,
                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="patchflow.server"):
        message = json_error(admin.request(method, path), 422)
    assert "less than or equal to 9223372036854775807" in message or "greater than" in message
    assert "unhandled error" not in caplog.text


def test_largest_id_is_a_plain_not_found(admin: httpx.Client) -> None:
    assert "no" in json_error(admin.get(f"/api/v1/admin/install/jobs/{BIG - 1}"), 404)
    assert "no" in json_error(admin.delete(f"/api/v1/admin/enrollment-tokens/{BIG - 1}"), 404)


@pytest.mark.parametrize("method,path", [
    ("GET", f"/api/v1/admin/eula/{HUGE}"),
    ("POST", f"/api/v1/admin/eula/{HUGE}/accept"),
    ("GET", f"/api/v1/admin/install/patches/{HUGE}"),
    ("GET", "/api/v1/admin/install/patches/%C2%B3"),  # "³".isdigit() is True
    ("GET", "/api/v1/admin/eula/%D9%A3"),  # Arabic-Indic three
])
def test_patch_refs_that_are_no_id_are_not_found(admin: httpx.Client, method: str,
                                                 path: str) -> None:
    assert "no patch" in json_error(admin.request(method, path), 404)


def test_patch_ref_with_control_characters_is_422(admin: httpx.Client) -> None:
    json_error(admin.get("/api/v1/admin/install/patches/a%00b"), 422)


def test_agent_job_ids_and_exit_codes_are_bounded(api: Api) -> None:
    with api.client() as http:
        agent = api.enroll(http, "ws-bounds")
        post = http.post
        json_error(post(f"/api/v1/agent/jobs/{HUGE}/result", headers=agent,
                    json={"state": "failed"}), 422)
        json_error(post(f"/api/v1/agent/jobs/{BIG}/result", headers=agent,
                    json={"state": "failed"}), 422)
        for code in (HUGE, BIG, 2**32, -(2**31) - 1):
            message = json_error(post("/api/v1/agent/jobs/1/result", headers=agent,
                                  json={"state": "failed", "exit_code": code}), 422)
            assert "exit_code" in message
        # The Windows DWORD range, signed or unsigned, is accepted (no such job here: 404).
        for code in (-(2**31), -1073741819, 0, 3010, 2**32 - 1):
            assert "no job" in json_error(post("/api/v1/agent/jobs/1/result", headers=agent,
                                           json={"state": "failed", "exit_code": code}), 404)


def test_console_ids_and_report_paths(api: Api, cli, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                      tmp_path: Path) -> None:
    from models import ReportRun
    from models.db import session_scope

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "index.html").write_text("<p>report</p>", encoding="utf-8")
    with session_scope(api.db_url) as session:
        run = ReportRun(kind="missing", path=str(folder), status="done")
        session.add(run)
        session.flush()
        run_id = run.id
    assert add_admin(cli, monkeypatch).code == 0
    with api.client() as http:
        assert log_in(http).status_code in (200, 303)
        base = f"/console/reports/{run_id}/files"
        assert http.get(f"{base}/index.html").status_code == 200
        for rel in ("a%00.html", "x" * 5000 + ".html", "%00", "y" * 300 + "/z.csv"):
            response = http.get(f"{base}/{rel}")
            assert 400 <= response.status_code < 500, (rel[:20], response.status_code)
        for path in (f"/console/jobs/{HUGE}", f"/console/jobs/{BIG}.json",
                     f"/console/reports/{HUGE}", f"/console/reports/{HUGE}/files/index.html",
                     f"/console/patches/{HUGE}"):
            response = http.get(path)
            assert response.status_code == 422, (path, response.status_code)


def test_replication_revision_is_bounded(api: Api) -> None:
    from models.db import session_scope
    from patchflow.catalog import replication

    with session_scope(api.db_url) as session:
        token = replication.create_token(session, "branch")
    with api.client(headers={"Authorization": f"Bearer {token}"}) as replica:
        message = json_error(replica.get("/api/v1/replication/patches", params={"since": BIG}), 422)
        assert "since" in message and "less than or equal" in message
