"""Replication between patchflow instances on loopback: `patchflow serve` subprocesses with
separate homes, the downstream syncing through the real HTTPS API with the upstream's
certificate pinned. Two levels (downstream on SQLite and MariaDB), three levels with content
fetched on demand through the chain, a downstream killed mid-sync, and refused credentials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.httpserver import serve_files
from tests.support.replication_harness import (
    ROOT,
    Instance,
    add_local_server,
    make_instance,
    make_records,
    payload,
    seed,
)

pytestmark = pytest.mark.usefixtures("prefect")


@pytest.fixture(scope="module")
def vendor() -> Iterator[object]:
    """The vendor's download site the upstream's installer URLs point at."""
    with serve_files() as files:
        for n in range(1, 4000, 2):
            files.files[f"/app{n}.msi"] = payload(n)
        yield files


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory, vendor) -> Iterator[Instance]:
    """Instance A: 3,000 patches on its "local" patch server, served over HTTPS."""
    a = make_instance(tmp_path_factory.mktemp("rep"), "a")
    add_local_server(a)
    seed(a, make_records(3000, base_url=vendor.url))
    _accept(a, "KB5000000")
    a.serve()
    yield a
    a.stop()
    assert "Traceback" not in a.log()


def _token(instance: Instance, name: str = "replica") -> str:
    from models.db import session_scope
    from patchflow.catalog import replication

    with instance.active(), session_scope(instance.db_url) as session:
        return replication.create_token(session, name)


def _accept(instance: Instance, key: str) -> None:
    from models import Patch
    from models.db import session_scope
    from patchflow.catalog import replication

    with instance.active(), session_scope(instance.db_url) as session:
        pid = session.scalar(sa.select(Patch.id).where(Patch.ukey == key))
        replication.accept_eula(session, pid, "admin@hq")


def _add_replica(cli, name: str, up: Instance, token: str, *extra: str) -> None:
    result = cli("server", "add", name, "--host", f"{name}.corp", "--upstream", up.url,
                 "--upstream-token", token, "--upstream-fingerprint", up.fingerprint, *extra)
    assert result.code == 0, result.err


def _status(cli, name: str) -> dict:
    rows = json.loads(cli("server", "list", "--json").out)
    return next(r for r in rows if r["name"] == name)


def _catalog(db_url: str, server: str) -> dict[str, dict]:
    """What a patch server offers, in a form two instances can be compared by."""
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT p.id, p.ukey, p.title, p.severity, p.category, p.restart_required, "
            "p.eula_required, s.ukey AS superseded_by, "
            "(SELECT COUNT(*) FROM eula_acceptances e WHERE e.patch_id = p.id) AS accepted "
            "FROM patches p JOIN server_patches sp ON sp.patch_id = p.id "
            "JOIN patch_servers ps ON ps.id = sp.server_id "
            "LEFT JOIN patches s ON s.id = p.superseded_by_id WHERE ps.name = :name"),
            {"name": server}).mappings().all()
        children = {}
        for table, column in (("patch_products", "product"), ("patch_cves", "cve"),
                              ("patch_installers", "sha256"), ("supersedence", "supersedes_key")):
            for pid, value in conn.execute(sa.text(f"SELECT patch_id, {column} FROM {table}")):
                children.setdefault((table, pid), []).append(value)
    engine.dispose()
    result = {}
    for row in rows:
        item = {k: row[k] for k in row if k not in ("id", "ukey")}
        for table in ("patch_products", "patch_cves", "patch_installers", "supersedence"):
            item[table] = sorted(children.get((table, row["id"]), []))
        result[row["ukey"]] = item
    return result


def _revision(db_url: str, server: str) -> int:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        value = conn.execute(sa.text("SELECT replication_revision FROM patch_servers "
                                     "WHERE name = :n"), {"n": server}).scalar_one()
    engine.dispose()
    return int(value)


def _offered_up_to(db_url: str, revision: int) -> int:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        count = conn.execute(sa.text("SELECT COUNT(*) FROM server_patches WHERE revision <= :r"),
                             {"r": revision}).scalar_one()
    engine.dispose()
    return int(count)


def test_two_levels_incremental_with_own_filters(cli, home: Path, db_url: str,
                                                  tmp_path: Path, vendor) -> None:
    a = make_instance(tmp_path, "a")
    add_local_server(a)
    seed(a, make_records(120, base_url=vendor.url))
    a.serve()
    try:
        token = _token(a, "branch-office")
        assert cli("init").code == 0
        _add_replica(cli, "branch", a, token)
        result = cli("sync", "branch")
        assert result.code == 0, result.out
        status = _status(cli, "branch")
        assert status["sync_status"] == "Successful"
        assert "1 pages applied (120 patches), at revision 120 of 120" in status["sync_message"]
        assert status["upstream_token_set"] and token not in json.dumps(status)
        assert _catalog(db_url, "branch") == _catalog(a.db_url, "local")

        # Changes upstream: new patches and a EULA accepted there arrive, nothing else.
        seed(a, make_records(10, start=120, base_url=vendor.url))
        _accept(a, "Example.App1@1.1")
        assert cli("sync", "branch").code == 0
        assert "(11 patches), at revision 131 of 131" in _status(cli, "branch")["sync_message"]
        mirrored = _catalog(db_url, "branch")
        assert mirrored == _catalog(a.db_url, "local")
        assert mirrored["Example.App1@1.1"]["accepted"] == 1
        assert mirrored["KB5000118"]["superseded_by"] == "KB5000120"

        # The downstream's own filters narrow what it offers; the upstream is read again.
        assert cli("server", "filters", "branch", "--categories", "Applications").code == 0
        assert cli("sync", "branch").code == 0
        offered = _catalog(db_url, "branch")
        assert len(offered) == 65 and {p["category"] for p in offered.values()} == {
            "Applications"}
        assert cli("sync", "branch").code == 0
        assert "0 pages applied (0 patches)" in _status(cli, "branch")["sync_message"]
    finally:
        a.stop()
    assert "Traceback" not in a.log()


def test_three_levels_and_content_on_demand(cli, sqlite_home: Path, tmp_path: Path,
                                            vendor) -> None:
    from patchflow.catalog.content import ContentStore
    from patchflow.catalog.content_source import fetch_content

    upstream = make_instance(tmp_path, "a")
    add_local_server(upstream)
    seed(upstream, make_records(100, base_url=vendor.url))
    _accept(upstream, "KB5000000")
    upstream.serve()
    b = make_instance(tmp_path, "b")
    c = make_instance(tmp_path, "c")
    with b.active():
        _add_replica(cli, "branch", upstream, _token(upstream, "b"))
        result = cli("sync", "branch")
        assert result.code == 0, result.out
    b.serve()
    try:
        with c.active():
            _add_replica(cli, "leaf", b, _token(b, "c"), "--upstream-server", "branch")
            result = cli("sync", "leaf")
            assert result.code == 0, result.out
            assert "at revision 100 of 100" in _status(cli, "leaf")["sync_message"]
        assert _catalog(c.db_url, "leaf") == _catalog(upstream.db_url, "local")

        # Content: C asks B, B asks A, A downloads from the vendor; each level keeps a copy.
        sha = _catalog(upstream.db_url, "local")["Example.App3@1.3"]["patch_installers"][0]
        seen = len(vendor.requests)
        with c.active():
            path = fetch_content(sha, "leaf")
            assert path.read_bytes() == payload(3)
        assert len(vendor.requests) == seen + 1
        for level in (upstream, b):
            assert ContentStore(level.home / "content").has(sha)

        # --prefetch fetches the rest ahead, through B only.
        with c.active():
            result = cli("sync", "leaf", "--prefetch")
            assert result.code == 0, result.out
            message = _status(cli, "leaf")["sync_message"]
            assert "0 pages applied" in message and "49 content files prefetched" in message
            assert ContentStore(c.home / "content").has(sha)
            assert cli("sync", "leaf", "--prefetch").code == 0
            assert "0 content files prefetched" in _status(cli, "leaf")["sync_message"]
    finally:
        b.stop()
        upstream.stop()
    assert "Traceback" not in b.log() + upstream.log()


def test_a_downstream_killed_mid_sync_continues(cli, sqlite_home: Path, tmp_path: Path,
                                                upstream: Instance) -> None:
    from prefect.settings import PREFECT_API_URL

    (sqlite_home / "patchflow.toml").write_text("[replication]\npage_size = 20\n")
    assert cli("init").code == 0
    _add_replica(cli, "branch", upstream, _token(upstream))
    db_url = os.environ["PATCHFLOW_DATABASE_URL"]
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value())}
    log = (tmp_path / "sync.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "sync", "branch"], cwd=ROOT,
                               env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 90
        while _revision(db_url, "branch") < 400:
            assert process.poll() is None, (tmp_path / "sync.log").read_text()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(30)
    revision = _revision(db_url, "branch")
    assert 400 <= revision < 3001
    done = len(_catalog(db_url, "branch"))
    assert done % 20 == 0 and done == _offered_up_to(upstream.db_url, revision)  # whole pages

    result = cli("sync", "branch", "--force")
    assert result.code == 0, result.out
    message = _status(cli, "branch")["sync_message"]
    assert f"{(3000 - done + 19) // 20} pages applied ({3000 - done} patches)" in message
    assert _catalog(db_url, "branch") == _catalog(upstream.db_url, "local")


def test_bad_token_and_wrong_certificate_are_refused(cli, sqlite_home: Path, tmp_path: Path,
                                                     upstream: Instance) -> None:
    other = make_instance(tmp_path, "other")  # a certificate that is not the upstream's
    assert cli("init").code == 0
    _add_replica(cli, "branch", upstream, "pfr_not-a-token")
    cases = [
        ((), "refused the replication token (HTTP 401: invalid replication token)"),
        (("--upstream-token", "revoked"), "(HTTP 403: replication token revoked)"),
        (("--upstream-token", _token(upstream), "--upstream-fingerprint", other.fingerprint),
         "certificate does not match the pinned fingerprint"),
    ]
    for options, reason in cases:
        if options[:2] == ("--upstream-token", "revoked"):
            from models.db import session_scope
            from patchflow.catalog import replication

            token = _token(upstream, "soon revoked")
            with upstream.active(), session_scope(upstream.db_url) as session:
                last = replication.list_tokens(session)[-1]["id"]
                replication.revoke_token(session, last)
            options = ("--upstream-token", token)
        assert cli("server", "edit", "branch", *options).code == 0
        result = cli("sync", "branch")
        assert result.code == 1
        assert "Traceback" not in result.out + result.err
        status = _status(cli, "branch")
        assert status["sync_status"] == "Failed" and reason in status["sync_message"]
        assert "pfr_" not in status["sync_message"]
        assert status["patches"] == 0 and status["replication_revision"] == 0


def test_upstream_server_on_the_same_instance(cli, home: Path, db_url: str) -> None:
    """`--upstream server:NAME`: the catalog is shared, only the offer is replicated."""
    from models.db import session_scope
    from patchflow.catalog import servers
    from patchflow.catalog.catalog_store import store_document
    from sources.filters import Filters
    from sources.records import ParsedDocument

    def add(records: list) -> None:
        with session_scope() as session:
            server = servers.get_server(session, "local")
            store_document(session, server.id, ParsedDocument(
                key="x", release_date=None, content_hash="", patches=records), Filters())

    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "hq", "--winget-source", "none").code == 0
    add(make_records(30))
    assert cli("server", "add", "branch", "--host", "b", "--upstream", "server:local").code == 0
    assert cli("server", "filters", "branch", "--categories", "Applications").code == 0
    assert cli("sync", "branch").code == 0
    assert "1 pages applied (15 patches), at revision 30 of 30" in _status(
        cli, "branch")["sync_message"]
    add(make_records(6, start=30))
    assert cli("sync", "branch").code == 0
    assert "(3 patches), at revision 36 of 36" in _status(cli, "branch")["sync_message"]
    offered = _catalog(db_url, "branch")
    assert len(offered) == 18 and {p["category"] for p in offered.values()} == {"Applications"}
