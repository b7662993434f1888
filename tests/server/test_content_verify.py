"""Stored content is hash-checked before it is served: the first time after start and whenever
the file changed. A tampered file is quarantined, the agent gets a clear 409 and the items
waiting for it fail with the reason. Real HTTPS server on loopback, SQLite and MariaDB."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from models import Endpoint, InstallJob, InstallJobItem, Patch
from models.db import session_scope
from patchflow.catalog import content as content_mod
from patchflow.catalog.content import ContentStore, ContentTampered
from tests.fixtures.agent.harness import Api, api_on_both_databases

DATA = b"MZ genuine installer bytes " * 1000
SHA = hashlib.sha256(DATA).hexdigest()


api = api_on_both_databases("content-verify", scope="function")


def _dispatched_item(db_url: str, hostname: str) -> int:
    """A job with one item already offered to `hostname`'s agent for file SHA."""
    with session_scope(db_url) as session:
        endpoint = session.query(Endpoint).filter_by(hostname=hostname).one()
        patch = Patch(source="winget", ukey="Test.App@1.0", title="Test App 1.0", vendor="Test",
                      category="Application")
        job = InstallJob(created_by="tests", status="running")
        session.add_all([patch, job])
        session.flush()
        item = InstallJobItem(job_id=job.id, endpoint_id=endpoint.id, patch_id=patch.id,
                              state="dispatched", content_sha256=SHA,
                              download_url=f"/content/sha256/{SHA}")
        session.add(item)
        session.flush()
        return item.id


def test_tampered_content_is_quarantined_and_its_item_fails(api: Api) -> None:
    content_mod._verified.clear()  # as after a start: nothing checked yet in this process
    store = ContentStore()
    path = store.put_bytes(DATA, SHA)
    with api.client() as http:
        agent = api.enroll(http, "WS-CONTENT")
        item_id = _dispatched_item(api.db_url, "WS-CONTENT")
        ok = http.get(f"/content/sha256/{SHA}", headers=agent)
        assert ok.status_code == 200 and ok.content == DATA

        # Same size, mtime put back: only the content (and so ctime) differs.
        stat = path.stat()
        path.write_bytes(DATA.replace(b"genuine", b"evil!!!"))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        refused = http.get(f"/content/sha256/{SHA}", headers=agent)
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert "failed its SHA-256 check" in error and "quarantine" in error

        assert not path.exists()
        quarantined = list(store.quarantine_dir.glob(f"{SHA}.*"))
        assert len(quarantined) == 1 and b"evil!!!" in quarantined[0].read_bytes()
        with session_scope(api.db_url) as session:
            item = session.get(InstallJobItem, item_id)
            assert item is not None and item.state == "failed"
            assert "failed its SHA-256 check" in (item.message or "")
        # Gone from the store: never offered again.
        assert http.get(f"/content/sha256/{SHA}", headers=agent).status_code == 404


def test_a_file_tampered_before_start_is_caught_on_first_use(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    path = store.put_bytes(DATA, SHA)
    path.write_bytes(b"x" * len(DATA))
    content_mod._verified.clear()  # a new process: the file was never checked
    with pytest.raises(ContentTampered, match="failed its SHA-256 check"):
        store.verified_path(SHA)
    # has() treats it as absent, so on-demand fetching gets a good copy again.
    assert not store.has(SHA)
    assert store.put_bytes(DATA, SHA).read_bytes() == DATA
    assert store.has(SHA)


def test_an_unchanged_file_is_hashed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    store = ContentStore(tmp_path)
    store.put_bytes(DATA, SHA)
    content_mod._verified.clear()
    calls: list[Path] = []
    real = content_mod.file_sha256
    monkeypatch.setattr(content_mod, "file_sha256", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        assert store.verified_path(SHA) is not None
    assert len(calls) == 1
