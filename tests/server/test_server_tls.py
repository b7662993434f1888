"""The server certificate from `patchflow init`, `patchflow tls fingerprint`, and `patchflow
serve` as users run it: a subprocess answering HTTPS on a loopback port."""

from __future__ import annotations

import os
import ssl
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.paths import REPO
from tests.support.polling import free_port

ROOT = REPO


def test_init_generates_a_certificate_for_the_host_once(cli, sqlite_home: Path) -> None:
    from patchflow.ops import tls

    result = cli("init", "--host", "patch.corp.example")
    assert result.code == 0, result.err
    cert, key = sqlite_home / "tls" / "server.crt", sqlite_home / "tls" / "server.key"
    assert "self-signed certificate for patch.corp.example" in result.out
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert tls.san_names(cert) == ["patch.corp.example", "localhost", "127.0.0.1"]
    printed = cli("tls", "fingerprint")
    assert printed.code == 0
    fingerprint = printed.out.strip()
    assert len(fingerprint) == 95 and fingerprint == tls.fingerprint(cert)
    # Agents pinned it: a second init (even for a new host name) keeps the certificate.
    again = cli("init", "--host", "other.corp.example")
    assert again.code == 0 and "kept" in again.out
    assert cli("tls", "fingerprint").out.strip() == fingerprint


def test_a_configured_certificate_is_used_instead(cli, sqlite_home: Path, tmp_path: Path) -> None:
    from patchflow.ops import tls

    own_cert, own_key = tmp_path / "own.crt", tmp_path / "own.key"
    tls.generate_self_signed("own.example", own_cert, own_key)
    result = cli("init", "--cert", str(own_cert), "--key", str(own_key))
    assert result.code == 0, result.err
    assert "using configured certificate" in result.out
    assert not (sqlite_home / "tls" / "server.crt").exists()
    assert cli("tls", "fingerprint").out.strip() == tls.fingerprint(own_cert)


def test_serve_and_fingerprint_without_a_certificate_fail_in_one_line(
    cli, sqlite_home: Path
) -> None:
    for args in (("tls", "fingerprint"), ("serve", "--port", "1")):
        result = cli(*args)
        assert result.code == 2
        assert "no TLS certificate" in result.err and "patchflow init" in result.err
        assert len(result.err.strip().splitlines()) == 1


def test_patchflow_serve_answers_over_https_with_two_workers(
    cli, sqlite_home: Path, tmp_path: Path
) -> None:
    assert cli("init", "--host", "localhost").code == 0
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, "PATCHFLOW_HOME": str(sqlite_home)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port",
             str(port), "--no-access-log", "--workers", "2"], cwd=ROOT, env=env, stdout=out,
            stderr=out)
    try:
        context = ssl.create_default_context(cafile=str(sqlite_home / "tls" / "server.crt"))
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.get(f"https://localhost:{port}/api/v1/health", verify=context)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("patchflow serve did not start: " + log.read_text())
                time.sleep(0.2)
        assert response.json()["status"] == "ok"
        # Plain HTTP on the HTTPS port gets nowhere.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=20)
    assert "Traceback" not in log.read_text()
