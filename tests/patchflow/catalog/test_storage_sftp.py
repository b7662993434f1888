"""Content and reports on a shared storage (`[storage] url`) that is a real SFTP server: Debian's
OpenSSH sshd on loopback, reached through fsspec's sftp and paramiko, as a production file
server would be. Two "nodes" share it: each has its own local content folder, one stores a
file and the real HTTPS server of the other serves it to an agent, hash-checked; a file
changed on the storage is refused; a report written on one node is opened through the
console, streamed from the storage; a storage that cannot be reached is one line."""

from __future__ import annotations

import datetime as dt
import hashlib
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from models import ReportRun
from models.db import session_scope
from patchflow.catalog import content as content_mod
from patchflow.catalog.content import ContentError, ContentStore
from patchflow.catalog.storage import StorageError, configured, open_storage
from patchflow.reporting.service import (
    build_reports,
    html_options,
    load_frames,
    output_dir,
    report_key,
    summary_markdown,
    write_files,
)
from patchflow.scanning.missing_query import MissingFilters
from tests.fixtures.agent.harness import Api, running_api
from tests.fixtures.console import add_admin, log_in
from tests.support.polling import free_port
from tests.support.sshd_server import Sshd, sshd, unavailable

DATA = b"MZ installer kept on the shared storage " * 4000
SHA = hashlib.sha256(DATA).hexdigest()

pytestmark = pytest.mark.skipif(unavailable() is not None, reason=unavailable() or "")


@pytest.fixture(scope="module")
def ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    with sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api("sqlite", tmp_path_factory.mktemp("storage-api")) as api:
        yield api


@pytest.fixture
def api(server: Api, ssh: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Api:
    """The server's node: the storage set in its environment, an empty local content folder
    of its own (nothing it serves was stored through it)."""
    server.reset()
    from server.console import login

    login.login_limiter().reset()
    store = ssh.root / "store"
    if store.exists():
        shutil.rmtree(store)
    monkeypatch.setenv("PATCHFLOW_HOME", str(server.home))
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", server.db_url)
    monkeypatch.setenv("PATCHFLOW_STORAGE_URL", ssh.url())
    monkeypatch.setenv("PATCHFLOW_STORAGE_KEY_FILE", str(ssh.key_file))
    monkeypatch.setenv("PATCHFLOW_CONTENT_DIR", str(tmp_path / "server-node-content"))
    content_mod._verified.clear()
    return server


def _on_storage(ssh: Sshd, key: str) -> Path:
    return ssh.root / "store" / key


def test_content_stored_on_sftp_is_served_over_https_by_another_node(
        api: Api, ssh: Sshd, tmp_path: Path) -> None:
    worker = ContentStore(tmp_path / "worker-node-content")
    assert worker.storage is not None
    worker.put_bytes(DATA, SHA)
    remote = _on_storage(ssh, f"content/sha256/{SHA[:2]}/{SHA}")
    assert remote.read_bytes() == DATA
    # Written under a temporary name, renamed into place: no leftovers beside it.
    assert sorted(p.name for p in remote.parent.iterdir()) == [SHA]

    served_from = ContentStore()
    assert not served_from.path_for(SHA).exists()
    with api.client() as http:
        agent = api.enroll(http, "WS-SHARED")
        response = http.get(f"/content/sha256/{SHA}", headers=agent)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == SHA
        missing = "0" * 64
        assert http.get(f"/content/sha256/{missing}", headers=agent).status_code == 404
    # The serving node keeps the verified copy it served.
    assert served_from.path_for(SHA).read_bytes() == DATA


def test_a_file_changed_on_the_storage_is_refused_and_quarantined(
        api: Api, ssh: Sshd, tmp_path: Path) -> None:
    ContentStore(tmp_path / "worker-node-content").put_bytes(DATA, SHA)
    remote = _on_storage(ssh, f"content/sha256/{SHA[:2]}/{SHA}")
    remote.write_bytes(DATA.replace(b"installer", b"malware!!"))  # same size
    with api.client() as http:
        agent = api.enroll(http, "WS-SHARED")
        refused = http.get(f"/content/sha256/{SHA}", headers=agent)
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert "on the storage failed its SHA-256 check" in error and "quarantine" in error
        assert ssh.url() in error and "\n" not in error
        # Moved aside on the storage, never copied to the serving node: not offered again.
        assert not remote.exists()
        quarantined = list(_on_storage(ssh, "content/quarantine").glob(f"{SHA}.*"))
        assert len(quarantined) == 1 and b"malware!!" in quarantined[0].read_bytes()
        assert not ContentStore().path_for(SHA).exists()
        assert http.get(f"/content/sha256/{SHA}", headers=agent).status_code == 404
    # Storing it again (from the vendor, say) puts a good copy back.
    ContentStore(tmp_path / "other-node").put_bytes(DATA, SHA)
    assert remote.read_bytes() == DATA


def test_a_report_written_to_sftp_opens_through_the_console(
        api: Api, ssh: Sshd, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    generated = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    run_dir = output_dir(tmp_path / "worker-node-reports" / "20260302T090000Z", generated)
    filters = MissingFilters()
    kinds = ["missing", "compliance"]
    frames = load_frames(filters, kinds)
    reports = build_reports(frames, kinds)
    csvs = {f"{t.name}.csv" for r in reports for t in r.tables}
    opts = html_options(generated, filters, 1000, csvs)
    files = write_files(reports, run_dir, ["html", "csv"], opts)
    names = [name for name, _ in files]
    assert "index.html" in names and "missing.csv" in names
    written = {name: (run_dir / name).read_bytes() for name in names}
    for name in names:  # the same bytes on the storage
        assert _on_storage(ssh, f"{report_key(run_dir)}/{name}").read_bytes() == written[name]
    # Written again into the same folder (sftp's rename does not replace): the new bytes.
    (run_dir / "missing.csv").write_bytes(written["missing.csv"] + b"\n")
    shared = configured()
    assert shared is not None
    shared.put_file(run_dir / "missing.csv", f"{report_key(run_dir)}/missing.csv")
    written["missing.csv"] += b"\n"
    assert _on_storage(ssh, f"{report_key(run_dir)}/missing.csv").read_bytes() == \
        written["missing.csv"]
    assert not [p for p in _on_storage(ssh, report_key(run_dir)).iterdir()
                if p.name.endswith(".part")]
    with session_scope(api.db_url) as session:
        run = ReportRun(kind="missing,compliance", path=str(run_dir), status="done",
                        filters="{}", created_by="tests")
        session.add(run)
        session.flush()
        run_id = run.id
    shutil.rmtree(run_dir)  # the worker's folder is on another machine: only the storage has it

    assert add_admin(cli, monkeypatch).code == 0
    with api.client() as http:
        assert log_in(http).status_code == 303
        page = http.get("/console/reports")
        assert page.status_code == 200
        assert f"/console/reports/{run_id}/files/missing.csv" in page.text
        index = http.get(f"/console/reports/{run_id}/files/index.html")
        assert index.status_code == 200 and index.content == written["index.html"]
        assert index.headers["content-type"].startswith("text/html")
        assert "default-src 'none'" in index.headers["content-security-policy"]
        csv = http.get(f"/console/reports/{run_id}/files/missing.csv")
        assert csv.status_code == 200 and csv.content == written["missing.csv"]
        assert "attachment" in csv.headers["content-disposition"]
        for bad in ("..%2F..%2Fsecret.key", "missing.csv%00.html", "nothere.html",
                    "..%2Fcontent%2Fx.csv", "sub%2F..%2F..%2Fx.html"):
            assert http.get(f"/console/reports/{run_id}/files/{bad}").status_code == 404

        # The Prefect summary's links go through the console, not file://.
        console = f"{api.url}/console"
        linked = summary_markdown(reports, run_dir, files, replace(opts, console_url=console))
        assert "file://" not in linked
        link = f"{console}/reports/folder/{run_dir.name}/files/missing.csv"
        assert link in linked
        by_folder = http.get(link.removeprefix(api.url))
        assert by_folder.status_code == 200 and by_folder.content == written["missing.csv"]
        assert http.get("/console/reports/folder/nosuch/files/index.html").status_code == 404


def test_an_unreachable_or_bad_storage_is_one_line(
        api: Api, ssh: Sshd, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    closed = f"sftp://{ssh.user}@127.0.0.1:{free_port()}/srv/patchflow"
    with pytest.raises(StorageError) as caught:
        open_storage(closed, key_file=str(ssh.key_file))
    message = str(caught.value)
    assert message.startswith(f"cannot reach storage {closed}") and "\n" not in message

    monkeypatch.setenv("PATCHFLOW_STORAGE_URL", closed)
    store = ContentStore(tmp_path / "node")
    assert not store.has(SHA)
    with pytest.raises(ContentError, match="cannot reach storage") as failed:
        store.put_bytes(DATA, SHA)
    assert "\n" not in str(failed.value)
    assert not store.path_for(SHA).exists()  # not "stored" while the other nodes cannot read it
    with api.client() as http:
        agent = api.enroll(http, "WS-SHARED")
        away = http.get(f"/content/sha256/{SHA}", headers=agent)
        assert away.status_code == 503 and "cannot reach storage" in away.json()["error"]

    result = cli("report", "--kind", "missing", "--out", str(tmp_path / "out"))
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "cannot reach storage" in lines[0], result.err

    for bad, said in (("not a url", "is not a URL"),
                      (f"sftp://{ssh.user}:hunter2@127.0.0.1:{ssh.port}/x",
                       "must not hold a password"),
                      ("nosuchfs://bucket/x", "nosuchfs")):
        monkeypatch.setenv("PATCHFLOW_STORAGE_URL", bad)
        with pytest.raises(StorageError, match=said):
            configured()
        result = cli("report", "--kind", "missing", "--out", str(tmp_path / "out"))
        assert result.code == 2 and said in result.err, result
        assert "hunter2" not in result.err
        assert len(result.err.strip().splitlines()) == 1, result.err
