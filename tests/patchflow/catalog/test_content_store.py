"""Content store against a real HTTP server on loopback: hash check, resume, atomic rename."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import requests

from patchflow.catalog.content import ContentError, ContentStore
from tests.support.httpserver import serve_files

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def test_download_verifies_and_lays_out_by_hash(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with serve_files() as server:
        server.files["/setup.msi"] = PAYLOAD
        seen: list[int] = []
        path = store.download(f"{server.url}/setup.msi", SHA.upper(),
                              progress=lambda done, total: seen.append(done))
        assert path == tmp_path / "sha256" / SHA[:2] / SHA
        assert path.read_bytes() == PAYLOAD
        assert seen[-1] == len(PAYLOAD)
        # Present already: no second request.
        before = len(server.requests)
        store.download(f"{server.url}/setup.msi", SHA)
        assert len(server.requests) == before


def test_hash_mismatch_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with serve_files() as server:
        server.files["/evil.exe"] = b"not the installer"
        with pytest.raises(ContentError, match="SHA-256 mismatch"):
            store.download(f"{server.url}/evil.exe", SHA)
    assert not store.has(SHA)
    assert not list((tmp_path / "tmp").glob("*.part"))


def test_interrupted_download_resumes_with_range(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with serve_files() as server:
        server.files["/big.bin"] = PAYLOAD
        server.fail_after["/big.bin"] = 300_000
        session = requests.Session()
        with pytest.raises(ContentError, match="download of"):
            store.download(f"{server.url}/big.bin", SHA, session=session)
        part = tmp_path / "tmp" / f"{SHA}.part"
        assert 0 < part.stat().st_size < len(PAYLOAD)
        assert not store.has(SHA)
        path = store.download(f"{server.url}/big.bin", SHA, session=session)
        assert path.read_bytes() == PAYLOAD
        _last_path, last_headers = server.requests[-1]
        assert last_headers.get("Range", "").startswith("bytes=")
        assert int(last_headers["Range"][6:].rstrip("-")) > 0


def test_unreachable_and_bad_hash_format(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(ContentError, match="invalid SHA-256"):
        store.download("http://127.0.0.1:9/x", "abc")
    with serve_files() as server, pytest.raises(ContentError, match="HTTP 404"):
        store.download(f"{server.url}/missing", SHA)


def test_put_bytes_checks_hash(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    assert store.put_bytes(PAYLOAD, SHA).read_bytes() == PAYLOAD
    with pytest.raises(ContentError, match="mismatch"):
        store.put_bytes(b"x", hashlib.sha256(b"y").hexdigest())
