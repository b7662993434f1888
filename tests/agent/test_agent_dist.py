"""The agent is its own light distribution (agent-dist/): it imports only the standard library
and itself, and its wheel, installed in a fresh virtualenv, enrolls and reports to a real
server on loopback with none of the server's dependencies present."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.agent.harness import Api, base_inventory, running_api
from tests.support.paths import REPO

ROOT = REPO
HEAVY = {"prefect", "pandas", "sqlalchemy", "fastapi", "pydantic", "numpy", "uvicorn"}


def _imports(path: Path) -> set[str]:
    """Top-level names of every import in a module, the lazy ones inside functions too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_agent_imports_only_the_standard_library_and_itself() -> None:
    foreign = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "agent").rglob("*.py"))
        for name in _imports(path)
        if name not in sys.stdlib_module_names and name not in ("agent", "__future__")
    }
    assert foreign == set()


def test_the_server_model_and_the_agent_check_share_the_contract() -> None:
    """The pydantic model is built from agent.schema, and the agent's pre-flight check words
    a refusal as the server does."""
    from agent.schema import check
    from patchflow.fleet.inventory import validate_documents

    doc = base_inventory("WS-0001", 2)
    check(doc)
    validate_documents(doc)
    for bad, field in (
            ({**doc, "os": {**doc["os"], "arch": "sparc"}}, "os.arch"),
            ({**doc, "programs": [{"name": "x", "scope": "both"}]}, "programs.0.scope"),
            ({**doc, "schema_version": 2}, "schema_version"),
            ({k: v for k, v in doc.items() if k != "hostname"}, "hostname"),
            ({**doc, "colour": "blue"}, "colour")):
        with pytest.raises(ValueError) as ours:
            check(bad)
        with pytest.raises(ValueError) as theirs:
            validate_documents(bad)
        assert str(ours.value) == str(theirs.value)
        assert str(ours.value).startswith(f"{field}: ")


# --- the wheel in a fresh virtualenv ----------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api("sqlite", tmp_path_factory.mktemp("agent-dist")) as running:
        yield running


def _run(*args: str | Path, timeout: float = 300, **kwargs: object) -> str:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PATCHFLOW_", "PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
    return str(done.stdout)


@pytest.mark.slow
def test_the_agent_wheel_installs_alone_and_reports_to_a_server(api: Api,
                                                                tmp_path: Path) -> None:
    # Build from a copy, so the build's own folders never land in the working tree.
    source = tmp_path / "src"
    shutil.copytree(ROOT / "agent", source / "agent",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "agent-dist", source / "agent-dist")
    venv = tmp_path / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    _run(base, "-m", "venv", venv)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    wheels = tmp_path / "wheels"
    # setuptools, the only build requirement, comes from pip's configured index.
    _run(bindir / "python", "-m", "pip", "wheel", "--no-deps", "-q", "-w", wheels,
         source / "agent-dist")
    [wheel] = wheels.glob("patchflow_agent-*.whl")
    packaged = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    assert packaged == {str(p.relative_to(ROOT).as_posix())
                        for p in (ROOT / "agent").rglob("*.py")}  # no subpackage left out
    _run(bindir / "python", "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels,
         "patchflow-agent")

    installed = {p["name"].lower() for p in json.loads(_run(
        bindir / "python", "-m", "pip", "list", "--format=json"))}
    assert installed - {"pip", "setuptools", "wheel"} == {"patchflow-agent"}
    assert not installed & HEAVY
    site = _run(bindir / "python", "-c", "import agent, sysconfig; "
                "print(agent.__file__); print(sysconfig.get_paths()['purelib'])",
                cwd=tmp_path).split()
    assert site[0].startswith(site[1])  # the installed copy, not the repository's

    assert "enroll" in _run(bindir / "patchflow-agent", "--help", cwd=tmp_path)

    api.reset()
    inventory = tmp_path / "inventory.json"
    inventory.write_text(json.dumps(base_inventory("WS-LIGHT", 3)), encoding="utf-8")
    state = tmp_path / "state"
    out = _run(bindir / "patchflow-agent", "--state-dir", state, "enroll", "--server", api.url,
               "--token", api.token(), "--fingerprint", api.fingerprint, "--inventory",
               inventory, cwd=tmp_path, timeout=60)
    assert "enrolled WS-LIGHT" in out
    out = _run(bindir / "patchflow-agent", "--state-dir", state, "run", "--once", "--platform",
               "simulated", "--inventory", inventory, cwd=tmp_path, timeout=60)
    assert "inventory sent; 0 job(s)" in out

    from models.db import session_scope
    from patchflow import fleet

    with session_scope(api.db_url) as session:
        rows = {r["hostname"]: r for r in fleet.list_endpoints(session)}
    assert "WS-LIGHT" in rows

    # A simulated upgrade in the light agent: the entry the server named is replaced.
    job = {"id": 1, "attempt": 1, "patch": {"package_id": "Mozilla.Firefox",
                                            "version": "156.0.1", "vendor": "Mozilla"},
           "installer": {"type": "nullsoft", "arch": "x64"},
           "program": {"name": None, "replaces": {"name": "Mozilla Firefox (x64 en-US) 1",
                                                  "version": "1.1.0", "arch": "x64"}}}
    script = ("import json, sys; from pathlib import Path; "
              "from agent.platforms.simulated import SimulatedPlatform; "
              "p = SimulatedPlatform(Path(sys.argv[1])); "
              "print(p.install(json.loads(sys.argv[2]), None)); "
              "print(json.dumps(p.collect_inventory()['programs'])); "
              "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('patchflow', 'applicability', 'sources', 'models', 'server', 'pydantic')))")
    lines = _run(bindir / "python", "-c", script, inventory, json.dumps(job),
                 cwd=tmp_path).splitlines()
    assert lines[0] == "(0, '')" and lines[2] == "[]"
    versions = [(p["name"], p["version"]) for p in json.loads(lines[1])]
    assert ("Mozilla Firefox (x64 en-US) 1", "156.0.1") in versions and len(versions) == 3
