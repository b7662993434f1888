"""`patchflow init` as a setup wizard (driven through stdin, and once in a real terminal), by
flags and by `--config FILE`: every answer checked before anything is written, "no" at the
confirmation writes nothing, the proxy password is stored encrypted, and a backup is imported
into the new database."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import select
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.paths import REPO

ROOT = REPO


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home that does not exist yet, with nothing configured by the environment."""
    home = tmp_path / "home"
    monkeypatch.setenv("PATCHFLOW_HOME", str(home))
    for name in ("PATCHFLOW_DATABASE_URL", "PATCHFLOW_CONTENT_DIR", "PATCHFLOW_PROXY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    return home


def _wizard(cli: Any, monkeypatch: pytest.MonkeyPatch, answers: list[str], *args: str) -> Any:
    from cli.common import console

    monkeypatch.setattr(console, "width", 250)  # one message per line, whatever the terminal
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(answers) + "\n"))
    return cli("init", "--wizard", *args)


def _answers(content: str, db: list[str], proxy: list[str], upstream: list[str],
             host: str = "patch.corp.example", port: str = "6201",
             backup: list[str] | None = None, confirm: str = "y") -> list[str]:
    return [content, *db, *proxy, *upstream, host, port, *(backup or ["n"]), confirm]


def test_no_at_the_confirmation_writes_nothing(cli: Any, fresh: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    r = _wizard(cli, monkeypatch, _answers(
        str(tmp_path / "content"), ["sqlite"], ["y", "proxy.corp", "3128", "y", "svc", "pw"],
        ["wsus", "https://wsus.corp:8531"], confirm="n"))
    assert r.code == 1
    assert "nothing written" in r.out
    assert "Summary" in r.out and "http://proxy.corp:3128" in r.out and "pw" not in r.out
    assert not fresh.exists() and not (tmp_path / "content").exists()


def test_input_ending_early_writes_nothing(cli: Any, fresh: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    r = _wizard(cli, monkeypatch, ["", "sqlite"])
    assert r.code == 1 and "input ended" in r.out and "nothing written" in r.out
    assert not fresh.exists()


def test_wizard_sets_up_the_local_patch_server(cli: Any, fresh: Path, tmp_path: Path,
                                               db_url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    content = tmp_path / "store" / "content"
    if db_url.startswith("sqlite"):
        db = ["sqlite"]
    else:
        # A refused connection is reported and asked again; nothing is written meanwhile.
        db = ["mysql", "mysql+pymysql://root@127.0.0.1:1/nowhere", db_url]
    answers = _answers(
        str(a_file), db,
        ["y", "bad host!", "proxy.corp", "70000", "3128", "y", "svc", "pr0xy-s3cret"],
        ["wsus", "ftp://wsus", "https://wsus.corp:8531"], host="patch.corp.example",
        port="7443")
    answers.insert(1, str(content))  # the content folder, after the refused file
    r = _wizard(cli, monkeypatch, answers)
    assert r.code == 0, r.out + r.err
    out = r.out
    assert f"content folder {str(a_file)!r}" in out and "is not a folder" in out
    assert "invalid proxy host 'bad host!'" in out and "invalid proxy port 70000" in out
    assert "invalid WSUS URL 'ftp://wsus'" in out
    if not db_url.startswith("sqlite"):
        assert "cannot connect to mysql+pymysql://root@127.0.0.1:1/nowhere" in out
    assert "patch server local created" in out
    assert "pr0xy-s3cret" not in out

    config = (fresh / "patchflow.toml").read_text()
    assert f'dir = "{content}"' in config and content.is_dir()
    assert 'host = "patch.corp.example"' in config and "port = 7443" in config
    assert "pr0xy-s3cret" not in config
    if not db_url.startswith("sqlite"):
        monkeypatch.setenv("PATCHFLOW_DATABASE_URL", db_url)
    server = json.loads(cli("server", "list", "--json").out)[0]
    assert (server["name"], server["host"], server["port"]) == ("local", "patch.corp.example",
                                                                7443)
    assert server["upstream"] == "wsus" and server["wsus_url"] == "https://wsus.corp:8531"
    assert server["proxy"] == "http://proxy.corp:3128" and server["proxy_user"] == "svc"
    assert server["proxy_password_set"]
    from models import PatchServer
    from models.db import session_scope
    from patchflow import crypto

    with session_scope() as session:
        stored = session.query(PatchServer).one().proxy_password_enc
    assert stored and "pr0xy-s3cret" not in stored and crypto.decrypt(stored) == "pr0xy-s3cret"
    assert (fresh / "tls" / "server.crt").exists()

    # Run again: the answers become the defaults, the server is updated, not duplicated.
    monkeypatch.delenv("PATCHFLOW_DATABASE_URL", raising=False)
    again = _wizard(cli, monkeypatch, ["", ""] + ([""] if len(db) > 1 else [])
                    + ["n", "microsoft", "", "", "n", "y"])
    assert again.code == 0, again.out + again.err
    assert "patch server local updated" in again.out


def test_backup_import(cli: Any, fresh: Path, tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    source = tmp_path / "source"
    monkeypatch.setenv("PATCHFLOW_HOME", str(source))
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "old.corp", "--winget-source", "none").code == 0
    assert cli("server", "add", "branch", "--host", "branch.corp").code == 0
    archive = tmp_path / "old.exp"
    assert cli("backup", "--out", str(archive)).code == 0
    damaged = tmp_path / "damaged.exp"
    damaged.write_bytes(archive.read_bytes()[:-40])

    monkeypatch.setenv("PATCHFLOW_HOME", str(fresh))
    r = _wizard(cli, monkeypatch, _answers(
        "", ["sqlite"], ["n"], ["microsoft"], host="new.corp",
        backup=["y", str(tmp_path / "missing.exp"), str(damaged), str(archive)]))
    assert r.code == 0, r.out + r.err
    assert "does not exist" in r.out and "damaged" in r.out
    assert re.search(r"imported \d+ rows", r.out)
    servers = {s["name"]: s for s in json.loads(cli("server", "list", "--json").out)}
    assert set(servers) == {"local", "branch"}
    assert servers["local"]["host"] == "new.corp"  # the answers apply to the imported server

    # Into a database that already holds data: refused before anything is written.
    r = cli("init", "--import", str(archive))
    assert r.code == 2 and "already holds data" in r.err


def test_flags_and_config_file(cli: Any, fresh: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    answers = tmp_path / "setup.toml"
    answers.write_text(f"""
[content]
dir = "{tmp_path / 'files'}"
[proxy]
host = "proxy.corp"
port = 3128
user = "svc"
[upstream]
kind = "wsus"
wsus_url = "https://wsus.corp:8531"
[server]
host = "patch.corp.example"
port = 7443
""")
    r = cli("init", "--config", str(answers))
    assert r.code == 2 and "PATCHFLOW_PROXY_PASSWORD" in r.err
    assert not fresh.exists()  # checked before anything was written
    monkeypatch.setenv("PATCHFLOW_PROXY_PASSWORD", "from-env")
    r = cli("init", "--config", str(answers), "--port", "8443")  # an option beats the file
    assert r.code == 0, r.err
    server = json.loads(cli("server", "list", "--json").out)[0]
    assert (server["host"], server["port"], server["upstream"]) == (
        "patch.corp.example", 8443, "wsus")
    assert server["proxy"] == "http://proxy.corp:3128" and server["proxy_password_set"]
    assert (tmp_path / "files").is_dir()

    for args, message in [
        (("--upstream", "wsus"), "needs its URL"),
        (("--proxy", "proxy.corp"), "invalid proxy"),
        (("--database-url", "postgresql://u@h/db"), "unsupported database"),
        (("--database-url", "mysql+pymysql://root@127.0.0.1:1/x"), "cannot connect"),
        (("--host", "bad host"), "invalid host"),
    ]:
        r = cli("init", *args)
        assert r.code == 2 and message in r.err, (args, r.err)
    bad = tmp_path / "bad.toml"
    bad.write_text('[proxy]\npassword = "x"\n')
    r = cli("init", "--config", str(bad))
    assert r.code == 2 and "do not put the proxy password in a file" in r.err


def test_plain_init_outside_a_terminal_is_unchanged(cli: Any, fresh: Path) -> None:
    r = cli("init")
    assert r.code == 0 and "schema: upgraded" in r.out and "patch server" not in r.out
    assert json.loads(cli("server", "list", "--json").out) == []


# --- a real terminal --------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Terminal:
    """`patchflow init` in a pseudo-terminal: prompts are read, answers typed."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        import pty

        pid, fd = pty.fork()
        if pid == 0:  # the child: a session of its own with the pty as controlling terminal
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, *argv], env)
        self.pid, self.fd, self.seen = pid, fd, ""

    def expect(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while text not in _ANSI.sub("", self.seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not shown; screen so far:\n{self.screen()}")
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.fd, 65536).decode(errors="replace")
                except OSError:  # the child exited
                    break
        return self.screen()

    def wait_for_hidden_input(self, timeout: float = 10) -> None:
        """Until the program turned echo off (getpass): typing earlier would be echoed, and
        then discarded when getpass flushes the input."""
        import termios

        deadline = time.monotonic() + timeout
        while termios.tcgetattr(self.fd)[3] & termios.ECHO:
            if time.monotonic() > deadline:
                raise AssertionError("echo was never turned off:\n" + self.screen())
            time.sleep(0.05)

    def type(self, line: str) -> None:
        os.write(self.fd, (line + "\r").encode())

    def screen(self) -> str:
        return _ANSI.sub("", self.seen)

    def wait(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                self.seen += os.read(self.fd, 65536).decode(errors="replace")
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.1)
        os.kill(self.pid, 9)
        raise AssertionError("patchflow init did not exit:\n" + self.screen())


def test_wizard_starts_by_itself_in_a_terminal(fresh: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PATCHFLOW_HOME": str(fresh), "PYTHONPATH": str(ROOT), "TERM": "xterm",
                "COLUMNS": "100"})
    term = Terminal(["-m", "cli.main", "init"], env)
    term.expect("Content folder")
    term.type("")
    term.expect("Database")
    term.type("")
    term.expect("Use a proxy server")
    term.type("y")
    term.expect("Proxy host")
    term.type("proxy.corp")
    term.expect("Proxy port")
    term.type("")
    term.expect("require authentication")
    term.type("y")
    term.expect("Proxy user")
    term.type("svc")
    term.expect("Proxy password")
    term.wait_for_hidden_input()
    term.type("typed-in-the-dark")
    term.expect("Upstream")
    term.type("")
    term.expect("Public host name")
    term.type("patch.corp.example")
    term.expect("SSL port")
    term.type("")
    term.expect("Import patch server data")
    term.type("n")
    screen = term.expect("Write this configuration?")
    assert "http://proxy.corp:8080" in screen and "svc (password stored encrypted)" in screen
    term.type("n")
    assert term.wait() == 1
    assert "nothing written" in term.screen()
    assert "typed-in-the-dark" not in term.screen()  # the password was not echoed
    assert not fresh.exists()
