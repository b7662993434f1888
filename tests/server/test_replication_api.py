"""The replication API on the upstream, over real HTTPS on SQLite and MariaDB: token auth,
paging in revision order, the patch server chosen, content by SHA-256 fetched on demand; and
`patchflow server token ...`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.fixtures.agent.harness import Api, api_on_both_databases
from tests.support.httpserver import serve_files
from tests.support.replication_harness import make_records, payload

api = api_on_both_databases("repl")


@pytest.fixture
def seeded(api: Api) -> Iterator[tuple[Api, str, object]]:
    """Two patch servers (local: 40 patches, lab: 5) and a vendor site; returns a token."""
    from models.db import session_scope
    from patchflow.catalog import replication, servers
    from patchflow.catalog.catalog_store import store_document
    from sources.filters import Filters
    from sources.records import ParsedDocument

    api.reset()
    with serve_files() as vendor:
        records = make_records(40, base_url=vendor.url)
        with session_scope(api.db_url) as session:
            for name, items in (("lab", records[:5]), ("local", records)):
                server = servers.add_server(session, name, servers.ServerOptions(host="h"))
                store_document(session, server.id, ParsedDocument(
                    key=name, release_date=None, content_hash="", patches=items), Filters())
            token = replication.create_token(session, "tests")
        yield api, token, vendor


def _get(client: httpx.Client, path: str, **params: object) -> httpx.Response:
    return client.get(path, params=params)


def test_routes_need_a_replication_token(seeded) -> None:
    api, _token, _vendor = seeded
    admin = api.admin_token()
    for headers, status, message in (
        ({}, 401, "replication token required"),
        ({"Authorization": "Bearer nope"}, 401, "invalid replication token"),
        ({"Authorization": f"Bearer {admin}"}, 401, "invalid replication token"),
    ):
        with api.client(headers=headers) as client:
            for path in ("/api/v1/replication/patches", "/api/v1/replication/content/" + "0" * 64):
                response = client.get(path)
                assert response.status_code == status
                assert message in response.json()["error"]


def test_pages_in_revision_order(seeded) -> None:
    api, token, _vendor = seeded
    with api.client(headers={"Authorization": f"Bearer {token}"}) as client:
        since, keys, revisions = 0, [], []
        while True:
            page = _get(client, "/api/v1/replication/patches", since=since, limit=7).json()
            assert page["format"] == "patchflow-replication/1" and page["server"] == "local"
            assert page["since"] == since and page["latest"] == 40
            keys += [p["key"] for p in page["patches"]]
            revisions += [p["revision"] for p in page["patches"]]
            since = page["next"]
            if not page["more"]:
                break
        assert revisions == sorted(revisions) and len(keys) == len(set(keys)) == 40
        assert since == 40
        empty = _get(client, "/api/v1/replication/patches", since=40).json()
        assert empty["patches"] == [] and empty["next"] == 40 and empty["more"] is False

        first = _get(client, "/api/v1/replication/patches", limit=2).json()["patches"]
        kb, app = first
        assert kb["key"] == "KB5000000" and kb["cves"] == ["CVE-2024-10000", "CVE-2024-20000"]
        assert kb["products"][0]["name"].startswith("Windows 11")
        assert app["installers"][0]["sha256"] == hashlib.sha256(payload(1)).hexdigest()
        assert app["installers"][0]["apps_and_features"] == [{"DisplayName": "Example App 1"}]
        lab = _get(client, "/api/v1/replication/patches", server="lab").json()
        assert lab["server"] == "lab" and len(lab["patches"]) == 5

        for params, status, message in (
            ({"server": "ghost"}, 404, "no patch server named 'ghost'"),
            ({"since": -1}, 422, "since"),
            ({"limit": 0}, 422, "limit"),
            ({"limit": 5001}, 422, "limit"),
        ):
            response = _get(client, "/api/v1/replication/patches", **params)
            assert response.status_code == status and message in response.json()["error"]


def test_accepting_a_eula_reoffers_the_patch(seeded) -> None:
    from models import Patch
    from models.db import session_scope
    from patchflow.catalog import replication

    api, token, _vendor = seeded
    with session_scope(api.db_url) as session:
        pid = session.query(Patch.id).filter(Patch.ukey == "KB5000002").scalar()
        replication.accept_eula(session, pid, "ops")
        replication.accept_eula(session, pid, "ops")  # once is enough
    with api.client(headers={"Authorization": f"Bearer {token}"}) as client:
        page = _get(client, "/api/v1/replication/patches", since=40).json()
    assert [p["key"] for p in page["patches"]] == ["KB5000002"]
    assert page["patches"][0]["revision"] == 41
    assert page["patches"][0]["eula_accepted"]["by"] == "ops"


def test_content_by_hash_is_fetched_on_demand(seeded) -> None:
    from patchflow.catalog.content import ContentStore

    api, token, vendor = seeded
    sha = hashlib.sha256(payload(3)).hexdigest()
    with api.client(headers={"Authorization": f"Bearer {token}"}) as client:
        url = "/api/v1/replication/content/"
        assert client.get(url + "XYZ").status_code == 422
        missing = client.get(url + "ab" * 32)
        assert missing.status_code == 404 and "no patch in the catalog" in missing.json()["error"]
        # The vendor does not have it (yet): a clear 424, nothing stored.
        failed = client.get(url + sha)
        assert failed.status_code == 424 and "HTTP 404" in failed.json()["error"]
        vendor.files["/app3.msi"] = payload(3)
        got = client.get(url + sha)
        assert got.status_code == 200 and got.content == payload(3)
        assert ContentStore(api.home / "content").has(sha)
        served = len(vendor.requests)
        assert client.get(url + sha).content == payload(3)
        assert len(vendor.requests) == served  # stored now


def test_token_commands(cli, sqlite_home) -> None:
    assert cli("init").code == 0
    created = cli("server", "token", "create", "--name", "berlin")
    assert created.code == 0 and created.out.strip().startswith("pfr_")
    assert "not shown again" in created.err
    listed = json.loads(cli("server", "token", "list", "--json").out)
    assert [(t["name"], t["revoked"]) for t in listed] == [("berlin", False)]
    assert created.out.strip() not in cli("server", "token", "list").out
    assert cli("server", "token", "revoke", str(listed[0]["id"])).code == 0
    assert json.loads(cli("server", "token", "list", "--json").out)[0]["revoked"] is True
    assert "no replication token with id 99" in cli("server", "token", "revoke", "99").err


def test_replica_settings_are_checked(cli, sqlite_home) -> None:
    assert cli("init").code == 0
    fingerprint = "AB" * 32
    cases = [
        (("--upstream", "https://hq.corp:6201"), "needs --upstream-token"),
        (("--upstream", "https://hq.corp:6201", "--upstream-token", "t",
          "--upstream-fingerprint", "12:34"), "invalid fingerprint"),
        (("--upstream", "http://hq.corp:6201", "--upstream-token", "t"), "invalid upstream"),
        (("--upstream-token", "t"), "apply to --upstream https://host:port"),
    ]
    for options, message in cases:
        result = cli("server", "add", "branch", "--host", "b", *options)
        assert result.code == 2 and message in result.err, result.err
    result = cli("server", "add", "branch", "--host", "b", "--upstream", "https://hq.corp:6201",
                 "--upstream-token", "pfr_secret", "--upstream-fingerprint",
                 "sha256:" + fingerprint.lower(), "--upstream-server", "berlin")
    assert result.code == 0, result.err
    shown = json.loads(cli("server", "list", "--json").out)[0]
    assert shown["upstream_fingerprint"] == ":".join(["AB"] * 32)
    assert shown["upstream_server"] == "berlin" and shown["upstream_token_set"] is True
    assert "pfr_secret" not in json.dumps(shown)
    import sqlalchemy as sa

    from models.db import get_engine

    with get_engine().connect() as conn:
        stored = conn.execute(sa.text("SELECT upstream_token_enc FROM patch_servers")).scalar()
    assert stored and "pfr_secret" not in stored
