"""Every command with `--json` prints JSON (docs/cli-json.md): one document, or one object per
line for the streaming ones; a failure is `{"error": "..."}` on stderr with a non-zero exit.
The command list is read from the typer app, so a new `--json` command is covered unasked."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR

pytestmark = pytest.mark.usefixtures("prefect")

# Commands that must succeed here, not only fail in JSON.
MUST_SUCCEED = {
    "init", "sync", "scan", "endpoints import", "tls fingerprint", "endpoints token create",
    "server token create", "admin token create", "jobs list", "jobs show", "report", "backup",
    "restore",
}
LAST = ("restore",)  # replaces the database: after everything else


def json_commands() -> list[tuple[str, ...]]:
    """(group..., command) of every command, or group with its own options, taking --json."""
    from typer.main import get_command

    from cli.main import _register, app

    _register()
    found: list[tuple[str, ...]] = []

    def walk(command: Any, path: tuple[str, ...]) -> None:
        if any("--json" in getattr(p, "opts", ()) for p in command.params):
            found.append(path)
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(get_command(app), ())
    return sorted(found, key=lambda p: p == LAST)


def parse(text: str) -> list[Any]:
    """One JSON document, or JSON lines; raises when it is neither (or empty)."""
    text = text.strip()
    assert text, "no output"
    try:
        return [json.loads(text)]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines()]


def _inventory(tmp: Path) -> Path:
    path = tmp / "ws-1.json"
    path.write_text(json.dumps({
        "schema_version": 1, "hostname": "WS-1", "domain": "corp.example",
        "os": {"name": "Windows 11 Pro", "display_version": "23H2", "build": 22631,
               "ubr": 5800, "arch": "x64", "language": "en-US", "hotpatch": False,
               "installation_type": "Client"},
        "programs": [{"name": "7-Zip 24.08 (x64)", "version": "24.08",
                      "publisher": "Igor Pavlov", "arch": "x64", "scope": "machine"}],
        "updates": [], "pending_reboot": False, "collected_at": "2026-11-29T08:00:00Z"}))
    return path


def test_every_json_command_prints_json(cli, sqlite_home: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from patchflow import config
    from patchflow.install import launch

    # `install now` without --wait starts the job's flow in a new process: recorded here, as
    # the console tests do, so the job stays pending for `jobs show` and `jobs cancel`.
    monkeypatch.setattr(launch, "LAUNCHER", [lambda job_id: os.getpid()])
    assert json.loads(cli("init", "--json").out)["home"] == str(sqlite_home)
    config.write_config({"install": {"item_timeout_s": 2, "poll_seconds": 0.2}})
    assert cli("server", "add", "local", "--host", "patch.corp.example", "--msrc-source",
               str(MSRC_DIR), "--winget-source", str(WINGET_DIR), "--winget-packages",
               ",".join(PACKAGES)).code == 0
    for feed in ("kev", "mozilla", "nvd"):  # `feeds sync` syncs none: no network in tests
        assert cli("feeds", "set", feed, "--source", "none").code == 0
    args: dict[tuple[str, ...], list[str]] = {
        ("init",): [],
        ("sync",): ["local"],
        ("scan",): ["--all"],
        ("endpoints", "import"): [str(_inventory(tmp_path))],
        ("endpoints", "show"): ["WS-1"],
        ("patches", "show"): ["KB5900110"],
        ("install", "show"): ["KB5900110"],
        ("install", "now"): ["KB5900110", "--endpoints", "WS-1"],
        ("jobs", "cancel"): ["1"],
        ("eula", "show"): ["Oracle.JavaRuntimeEnvironment@8.0.4510.9"],
        ("eula", "accept"): ["Oracle.JavaRuntimeEnvironment@8.0.4510.9"],
        ("approve",): ["KB5900110", "--groups", "all"],
        ("jobs", "show"): ["1"],
        ("backup",): ["--out", str(tmp_path / "b.exp")],
        ("restore",): [str(tmp_path / "b.exp"), "--force"],
        ("report",): ["--out", str(tmp_path / "reports")],
        ("rules", "preview"): ["nope"],
        ("rules", "add"): ["nightly", "--groups", "all"],
    }
    # Data first, so the later commands have something to show.
    order = [("sync",), ("endpoints", "import"), ("scan",), ("install", "now"), ("jobs", "show"),
             ("jobs", "cancel")]
    commands = order + [c for c in json_commands() if c not in order]
    seen: dict[str, int] = {}
    errors: dict[str, str] = {}
    problems: dict[str, str] = {}  # every command's problem at once, not the first only
    for command in commands:
        r = cli(*command, *args.get(command, []), "--json")
        name = " ".join(command)
        seen[name] = r.code
        errors[name] = r.err[-300:]
        try:
            if r.code == 0:
                parse(r.out)
            else:
                objects = parse(r.err)
                assert all(set(e) == {"error"} and e["error"] for e in objects), r.err
                assert r.out.strip() == "" or parse(r.out)
        except (AssertionError, ValueError) as exc:
            problems[name] = f"exit {r.code}: {exc}; out={r.out[:200]!r} err={r.err[:200]!r}"
    assert not problems, "\n".join(f"{k}: {v}" for k, v in problems.items())
    failed = sorted(n for n in MUST_SUCCEED if seen.get(n) != 0)
    assert not failed, {n: (seen.get(n), errors.get(n)) for n in failed}
    assert set(seen) >= MUST_SUCCEED


def test_json_errors_are_objects_on_stderr(cli, sqlite_home: Path) -> None:
    r = cli("patches", "show", "KB0000000", "--json")
    assert r.code == 2 and r.out == ""
    assert json.loads(r.err) == {"error": "no patch 'KB0000000' (give an id, a KB number or "
                                          "PACKAGE@VERSION)"}
    r = cli("jobs", "list", "--json", "--bogus")  # a usage error
    assert r.code == 2 and "--bogus" in json.loads(r.err)["error"]
    r = cli("jobs", "list", "--bogus")  # without --json: the plain line, as before
    assert r.code == 2 and r.err.startswith("error: ")


def test_endpoints_import_streams_one_line_per_file(cli, sqlite_home: Path,
                                                     tmp_path: Path) -> None:
    good = _inventory(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    r = cli("endpoints", "import", str(good), str(bad), "--json")
    assert r.code == 2
    lines = [json.loads(line) for line in r.out.splitlines()]
    assert lines[0] == {"file": str(good), "imported": 1, "error": None}
    assert lines[1]["file"] == str(bad) and lines[1]["imported"] == 0
    assert "malformed JSON" in lines[1]["error"]
    assert json.loads(r.err) == {"error": "1 of 2 file(s) not imported"}
