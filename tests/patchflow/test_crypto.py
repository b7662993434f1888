"""The encryption key from PATCHFLOW_SECRET_KEY: a worker node with its own, empty home decrypts
what the server's home encrypted, given only the key text in its environment, and never writes
it to disk. A malformed or wrong key is one line that names the variable, not the value."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from patchflow import crypto
from tests.support.smtp_server import PASSWORD, Smtp, smtp_server


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    yield from smtp_server()


def _one_line(text: str) -> bool:
    return len(text.strip().splitlines()) == 1 and "Traceback" not in text


def test_worker_home_decrypts_with_the_key_from_the_environment(
        cli, home: Path, tmp_path: Path, smtp: Smtp, monkeypatch: pytest.MonkeyPatch) -> None:
    # The server node: its home holds secret.key; the SMTP password goes encrypted into the
    # shared database.
    assert cli("init").code == 0
    monkeypatch.setenv("PATCHFLOW_SMTP_PASSWORD", PASSWORD)
    r = cli("mail", "set", "--host", "127.0.0.1", "--port", str(smtp.port), "--security", "none",
            "--user", "svc-reports", "--sender", "reports@corp.example")
    assert r.code == 0, r.err
    key_text = (home / "secret.key").read_text()

    # A worker node: another, empty home on the same database.
    worker = tmp_path / "worker-home"
    monkeypatch.setenv("PATCHFLOW_HOME", str(worker))
    r = cli("mail", "test", "--to", "admin@corp.example")
    assert r.code == 2 and _one_line(r.err), r.err
    assert "secret.key is missing" in r.err and "PATCHFLOW_SECRET_KEY is not set" in r.err
    assert smtp.logins == []

    monkeypatch.setenv("PATCHFLOW_SECRET_KEY", key_text)  # with its trailing newline, as cat gives
    assert cli("init").code == 0  # a worker's init must not create a key of its own
    r = cli("mail", "test", "--to", "admin@corp.example")
    assert r.code == 0, r.err
    assert smtp.logins == ["svc-reports"]  # the password decrypted on the worker was right
    assert not (worker / "secret.key").exists()
    assert key_text not in "".join(p.read_text(errors="replace")
                                   for p in worker.rglob("*") if p.is_file())
    # What the worker encrypts, the server's file key reads back.
    token = crypto.encrypt("proxy-pw")
    monkeypatch.delenv("PATCHFLOW_SECRET_KEY")
    monkeypatch.setenv("PATCHFLOW_HOME", str(home))
    assert crypto.decrypt(token) == "proxy-pw"


def test_a_wrong_or_malformed_key_is_one_line_without_the_value(
        cli, sqlite_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli("init").code == 0
    token = crypto.encrypt("smtp-pw")
    other = Fernet.generate_key().decode()
    monkeypatch.setenv("PATCHFLOW_SECRET_KEY", other)
    with pytest.raises(crypto.SecretError) as wrong:
        crypto.decrypt(token)
    assert str(wrong.value) == ("an encrypted setting does not match the key in "
                                "PATCHFLOW_SECRET_KEY")

    for bad in ("not-a-key-at-all", other[:-2], other + "AAAA", "é" * 44):
        monkeypatch.setenv("PATCHFLOW_SECRET_KEY", bad)
        with pytest.raises(crypto.SecretError) as malformed:
            crypto.decrypt(token)
        message = str(malformed.value)
        assert message.startswith("PATCHFLOW_SECRET_KEY is not a Fernet key") and _one_line(message)
        assert bad not in message
        with pytest.raises(crypto.SecretError):
            crypto.encrypt("x")  # never falls back to the file, nor writes a new one

    # Through the CLI: exit 2, one line on stderr, nothing of the value.
    monkeypatch.setenv("PATCHFLOW_SECRET_KEY", "s3cr3t-but-malformed")
    monkeypatch.setenv("PATCHFLOW_PROXY_PASSWORD", "proxy-pw")
    r = cli("server", "add", "px", "--host", "h", "--winget-source", "none",
            "--proxy", "http://proxy.corp.example:3128", "--proxy-user", "svc")
    assert r.code == 2 and _one_line(r.err), r.err
    assert "PATCHFLOW_SECRET_KEY is not a Fernet key" in r.err
    assert "s3cr3t" not in r.err + r.out

    # An empty variable counts as unset: the home's file is used again.
    monkeypatch.setenv("PATCHFLOW_SECRET_KEY", "")
    assert crypto.decrypt(token) == "smtp-pw"


def test_a_malformed_secret_key_file_is_one_line(sqlite_home: Path) -> None:
    (sqlite_home / "secret.key").write_text("garbage\n")
    with pytest.raises(crypto.SecretError) as info:
        crypto.encrypt("x")
    assert str(info.value).startswith(f"{sqlite_home / 'secret.key'} is not a Fernet key")
