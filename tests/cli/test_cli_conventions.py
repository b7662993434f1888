"""CLI conventions: `python -m patchflow`, `--version`, the environment variables as root
options listed in `--help`, a patchflow.toml that reads back whatever was written, help texts
that keep `[section]` words, and typer within the range pyproject.toml pins."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.paths import REPO

ROOT = REPO


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_python_m_patchflow_prints_the_version() -> None:
    from patchflow import __version__

    run = subprocess.run([sys.executable, "-m", "patchflow", "--version"], capture_output=True,
                         text=True, timeout=120, cwd=ROOT, check=False)
    assert (run.returncode, run.stdout, run.stderr) == (0, f"patchflow {__version__}\n", "")


def test_environment_variables_are_root_options_listed_in_help(cli, sqlite_home: Path,
                                                               tmp_path: Path) -> None:
    result = cli("--help")
    assert result.code == 0
    help_text = _flat(result.out)
    for name in ("PATCHFLOW_HOME", "PATCHFLOW_DATABASE_URL"):
        assert f"[env var: {name}]" in help_text
    assert "--version" in help_text

    # The options point this one run at another home and database; the caller's environment
    # is left as it was.
    before = {k: os.environ[k] for k in ("PATCHFLOW_HOME", "PATCHFLOW_DATABASE_URL")}
    other = tmp_path / "other-home"
    result = cli("--home", str(other), "--database-url", f"sqlite:///{other / 'other.db'}",
                 "init")
    assert result.code == 0, result.err
    assert (other / "secret.key").exists() and (other / "other.db").exists()
    assert not (sqlite_home / "secret.key").exists()
    assert {k: os.environ[k] for k in before} == before


def test_help_keeps_config_section_words(cli) -> None:
    """`[server]` and `[prefect]` name patchflow.toml sections; Rich markup used to eat them."""
    result = cli("serve", "--help")
    assert result.code == 0
    text = _flat(result.out)
    assert "[server] port or 6201" in text and "[prefect] port or 4200" in text


@pytest.mark.parametrize("value", [
    'first line\nsecond "quoted" line',
    'C:\\Program Files\\patchflow "x"\ttab',
    "ends with a backslash \\",
    "'''triple''' and \"\"\"double\"\"\"",
])
def test_config_round_trips_any_text(sqlite_home: Path, value: str) -> None:
    from patchflow import config

    path = config.write_config({"mail": {"footer": value, "port": 25, "tls": True}})
    assert tomllib.loads(path.read_text(encoding="utf-8"))["mail"]["footer"] == value
    assert config.setting("mail", "footer") == value
    # A later write keeps it, and None removes a key.
    config.write_config({"mail": {"port": None}, "server": {"host": "h"}})
    assert config.load_config()["mail"] == {"footer": value, "tls": True}
    assert not list(sqlite_home.glob("*.tmp"))


def test_typer_is_within_the_pinned_range() -> None:
    import typer
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [typer_req] = [Requirement(d) for d in deps if Requirement(d).name == "typer"]
    assert typer_req.specifier, "typer has no upper bound"
    assert any(s.operator == "<" for s in typer_req.specifier)
    assert typer_req.specifier.contains(typer.__version__)


def test_a_missing_command_module_fails_loudly() -> None:
    """A command group whose module is missing is a packaging bug: the CLI must not start
    without it (it used to skip it silently, and its commands just vanished from --help)."""
    code = ("import cli.main as m\n"
            "m.COMMAND_MODULES = (*m.COMMAND_MODULES, 'nosuch')\n"
            "raise SystemExit(m.main(['--help']))\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "No module named 'cli.nosuch'" in run.stderr
    assert "Usage" not in run.stdout
