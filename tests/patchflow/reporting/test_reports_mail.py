"""Report e-mail against a real SMTP server on loopback (aiosmtpd): settings, login, STARTTLS,
the report flow's message and its attachments, and failures as one-line errors."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import json
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchflow.reporting import mail
from tests.support.polling import free_port
from tests.support.report_seed import seed_home, sql_rows, sql_scalar
from tests.support.smtp_server import PASSWORD, Smtp, smtp_server


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    yield from smtp_server()


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, trusted by the client through --ca-file."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smtp.pem", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def _rebind_prefect_console() -> None:
    """Prefect's console log handler keeps the stderr it first saw; under pytest that is an
    earlier test's capture, closed by now, and logging would report 'Logging error' instead of
    our line. Point it at the current stderr so this test sees what a user sees."""
    import logging
    import sys

    from prefect.logging.handlers import PrefectConsoleHandler

    for name in ("prefect", "prefect.flow_runs", "prefect.task_runs", ""):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.console.file = sys.stderr


def _set(cli, port: int, *extra: str) -> None:
    r = cli("mail", "set", "--host", "127.0.0.1", "--port", str(port), "--security", "none",
            "--user", "svc-reports", "--sender", "reports@corp.example", *extra)
    assert r.code == 0, r.err


def test_settings_password_encrypted_never_shown(cli, home: Path, db_url: str,
                                                  monkeypatch) -> None:
    monkeypatch.setenv("PATCHFLOW_SMTP_PASSWORD", PASSWORD)
    r = cli("mail", "set", "--host", "smtp.corp.example", "--user", "svc-reports",
            "--sender", "reports@corp.example")
    assert r.code == 0, r.err
    assert PASSWORD not in r.out
    shown = json.loads(cli("mail", "show", "--json").out)
    assert shown == {"host": "smtp.corp.example", "port": 587, "security": "starttls",
                     "user": "svc-reports", "password_set": True,
                     "sender": "reports@corp.example", "ca_file": None,
                     "max_attachment_mb": 10.0}
    stored = dict(sql_rows(db_url, "SELECT `key`, value FROM settings" if "mysql" in db_url
                           else "SELECT key, value FROM settings"))
    assert stored["smtp.password_enc"] and PASSWORD not in stored["smtp.password_enc"]
    assert all(PASSWORD not in (v or "") for v in stored.values())
    from models.db import session_scope

    with session_scope() as session:
        settings = mail.load_settings(session)
    assert settings is not None and settings.password == PASSWORD
    assert PASSWORD not in repr(settings)
    # Clearing the user clears the password too.
    assert cli("mail", "set", "--user", "").code == 0
    assert json.loads(cli("mail", "show", "--json").out)["password_set"] is False


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "bad host!", "--sender", "a@b.example"], "invalid SMTP host"),
        (["--host", "h", "--sender", "nobody"], "invalid sender address 'nobody'"),
        (["--host", "h", "--sender", "a@b.example", "--port", "0"], "invalid SMTP port 0"),
        (["--host", "h", "--sender", "a@b.example", "--security", "tls"], "invalid SMTP security"),
        (["--host", "h"], "the sender address is not set"),
        (["--sender", "a@b.example"], "the SMTP host is not set"),
        (["--host", "h", "--sender", "a@b.example", "--ca-file", "/no/such.pem"], "does not exist"),
    ],
)
def test_bad_settings(cli, sqlite_home: Path, args: list[str], message: str) -> None:
    r = cli("mail", "set", *args)
    assert r.code == 2 and message in r.err and len(r.err.strip().splitlines()) == 1
    assert sql_scalar(f"sqlite:///{sqlite_home / 'patchflow.db'}",
                      "SELECT COUNT(*) FROM settings WHERE key LIKE 'smtp.%'") == 0


def test_test_message_with_login(cli, sqlite_home: Path, smtp: Smtp, monkeypatch) -> None:
    monkeypatch.setenv("PATCHFLOW_SMTP_PASSWORD", PASSWORD)
    _set(cli, smtp.port)
    r = cli("mail", "test", "--to", "admin@corp.example")
    assert r.code == 0, r.err
    assert smtp.logins == ["svc-reports"]
    (sender, rcpts, message), = smtp.messages
    assert sender == "reports@corp.example" and rcpts == ["admin@corp.example"]
    assert message["Subject"] == "patchflow test message"

    monkeypatch.setenv("PATCHFLOW_SMTP_PASSWORD", "wrong")
    _set(cli, smtp.port)
    r = cli("mail", "test", "--to", "admin@corp.example")
    assert r.code == 2 and "rejected the SMTP login for 'svc-reports'" in r.err
    assert "wrong" not in r.err and len(r.err.strip().splitlines()) == 1


def test_starttls(cli, sqlite_home: Path, tmp_path: Path, monkeypatch) -> None:
    cert, key = _certificate(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    monkeypatch.setenv("PATCHFLOW_SMTP_PASSWORD", PASSWORD)
    for server in smtp_server(context):
        # Plain SMTP to a server that requires STARTTLS: refused, one line.
        _set(cli, server.port)
        r = cli("mail", "test", "--to", "admin@corp.example")
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
        # Without trusting the certificate: verification fails.
        _set(cli, server.port, "--security", "starttls")
        r = cli("mail", "test", "--to", "admin@corp.example")
        assert r.code == 2 and "CERTIFICATE_VERIFY_FAILED" in r.err, r.err
        _set(cli, server.port, "--security", "starttls", "--ca-file", str(cert))
        r = cli("mail", "test", "--to", "admin@corp.example")
        assert r.code == 0, r.err
        assert len(server.messages) == 1 and server.logins == ["svc-reports"]


def test_report_email_body_and_attachments(cli, sqlite_home: Path, smtp: Smtp, prefect,
                                           tmp_path: Path, monkeypatch) -> None:
    seed_home()
    monkeypatch.setenv("PATCHFLOW_SMTP_PASSWORD", PASSWORD)
    _set(cli, smtp.port)
    out = tmp_path / "out"
    r = cli("report", "--kind", "missing,compliance", "--out", str(out),
            "--email", "ciso@corp.example, ops@corp.example", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    (_sender, rcpts, message), = smtp.messages
    assert rcpts == ["ciso@corp.example", "ops@corp.example"]
    assert message["Subject"] == "patchflow reports: missing, compliance"
    parts = {p.get_content_type(): p for p in message.walk() if not p.is_multipart()
             and p.get_filename() is None}
    html = parts["text/html"].get_payload(decode=True).decode("utf-8")
    assert "Missing patches" in html and "Compliance summary" in html
    assert str(out.resolve()) in html
    attachments = {p.get_filename(): p.get_payload(decode=True) for p in message.walk()
                   if p.get_filename()}
    csvs = sorted(p.name for p in out.glob("*.csv"))
    assert sorted(attachments) == csvs and "missing.csv" in csvs
    for name, data in attachments.items():
        assert data == (out / name).read_bytes(), name
    assert result["email"]["not_attached"] == []


def test_mail_failure_keeps_the_report(cli, sqlite_home: Path, prefect, tmp_path: Path,
                                       monkeypatch) -> None:
    """Nobody listening: the files are written, the run is recorded with the reason, the
    command says so on one line and exits non-zero."""
    import tasks.report as t

    monkeypatch.setattr(t, "MAIL_RETRY_DELAYS", ())
    _rebind_prefect_console()
    seed_home()
    monkeypatch.setenv("PATCHFLOW_SMTP_PASSWORD", PASSWORD)
    _set(cli, free_port())
    out = tmp_path / "out"
    r = cli("report", "--kind", "missing", "--out", str(out), "--email", "a@corp.example")
    assert r.code == 2
    # Prefect's log lines share stderr; ours is the last line, and nothing is a traceback.
    last = r.err.strip().splitlines()[-1]
    assert last.startswith("error: reports written to")
    assert "but the e-mail was not sent: cannot send mail through 127.0.0.1" in last
    assert "Traceback" not in r.err
    assert (out / "missing.csv").exists() and (out / "missing.html").exists()
    status, message = sql_rows(f"sqlite:///{sqlite_home / 'patchflow.db'}",
                               "SELECT status, message FROM report_runs")[0]
    assert status == "done" and message.startswith("e-mail not sent: cannot send mail")


def test_attachments_over_the_limit_stay_on_thesmtp_server(tmp_path: Path) -> None:
    files = []
    for name, size in (("big.csv", 3_000_000), ("small.csv", 10), ("mid.csv", 600_000)):
        path = tmp_path / name
        path.write_bytes(b"x" * size)
        files.append(path)
    attached, left = mail.pick_attachments(files, limit_mb=1)
    assert [p.name for p in attached] == ["small.csv", "mid.csv"]
    assert [p.name for p in left] == ["big.csv"]


def test_message_structure() -> None:
    message = mail.build_message("r@corp.example", ["a@corp.example"], "Süßes Subject",
                                 "<p>hé</p>", "hé\n", [("ü.csv", "a,b\n1,ü\n".encode())])
    parsed = email.message_from_bytes(message.as_bytes())
    assert parsed.get_content_type() == "multipart/mixed"
    types = [p.get_content_type() for p in parsed.walk()]
    assert types == ["multipart/mixed", "multipart/alternative", "text/plain", "text/html",
                     "text/csv"]
    csv_part = list(parsed.walk())[-1]
    assert csv_part.get_payload(decode=True).decode("utf-8") == "a,b\n1,ü\n"
