"""`patchflow-agent` against a real HTTPS server: enrollment with a pinned certificate (and its
refusal when the certificate changes), `run --once`, revocation, and the on-disk outbox."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main as agent_main
from tests.fixtures.agent.harness import Api, base_inventory, running_api


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    with running_api("sqlite", tmp_path_factory.mktemp("agent-cli")) as running:
        yield running


@pytest.fixture(scope="module")
def impostor(api: Api, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same app and database behind a different certificate, as a man in the middle."""
    from patchflow.ops import tls
    from server.app import create_app
    from server.run import BackgroundServer
    from server.settings import ServerSettings

    folder = tmp_path_factory.mktemp("impostor")
    cert, key = folder / "other.crt", folder / "other.key"
    tls.generate_self_signed("localhost", cert, key)
    app = create_app(ServerSettings(database_url=api.db_url))
    with BackgroundServer(app, cert, key) as server:
        yield server.url


@pytest.fixture
def agent(api: Api, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    api.reset()

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = agent_main(list(args))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def _inventory_file(folder: Path, hostname: str, programs: int = 3) -> Path:
    path = folder / f"{hostname}.json"
    path.write_text(json.dumps(base_inventory(hostname, programs)), encoding="utf-8")
    return path


def _endpoints(api: Api) -> dict[str, dict[str, Any]]:
    from models.db import session_scope
    from patchflow import fleet

    with session_scope(api.db_url) as session:
        return {row["hostname"]: row for row in fleet.list_endpoints(session)}


def test_enroll_with_fingerprint_then_run_once(agent, api: Api, tmp_path: Path) -> None:
    state = tmp_path / "state"
    inventory = _inventory_file(tmp_path, "WS-0101", programs=4)
    # Any spelling of the fingerprint works: lower case, no colons.
    pin = api.fingerprint.replace(":", "").lower()
    code, out, err = agent("--state-dir", str(state), "enroll", "--server", api.url,
                           "--token", api.token(), "--fingerprint", pin,
                           "--inventory", str(inventory))
    assert code == 0, err
    assert "enrolled WS-0101" in out
    saved = json.loads((state / "agent.json").read_text())
    assert saved["fingerprint"] == api.fingerprint
    assert saved["secret"] not in out + err
    assert stat.S_IMODE((state / "agent.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700

    code, out, err = agent("--state-dir", str(state), "run", "--once", "--platform", "simulated",
                           "--inventory", str(inventory))
    assert code == 0, err
    assert "inventory sent; 0 job(s)" in out
    row = _endpoints(api)["WS-0101"]
    assert (row["programs"], row["kbs"], row["enrolled"]) == (4, 2, True)


def test_enroll_with_a_wrong_fingerprint_is_refused_before_the_token_is_sent(
    agent, api: Api, tmp_path: Path
) -> None:
    wrong = ("CD:" if api.fingerprint.startswith("AB") else "AB:") + api.fingerprint[3:]
    token = api.token(uses=1)
    code, _out, err = agent("--state-dir", str(tmp_path / "s"), "enroll", "--server", api.url,
                           "--token", token, "--fingerprint", wrong, "--hostname", "ws-x")
    assert code == 3
    assert "does not match the pinned one" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s" / "agent.json").exists()
    assert _endpoints(api) == {}
    # The token was never presented: it still has its one use.
    with api.client() as client:
        response = client.post("/api/v1/agent/enroll", json={"token": token, "hostname": "ws-x"})
        assert response.status_code == 201
    code, _out, err = agent("--state-dir", str(tmp_path / "s"), "enroll", "--server", api.url,
                            "--token", token, "--fingerprint", "12:34")
    assert code == 2 and "invalid fingerprint" in err


def test_a_changed_server_certificate_is_refused(
    agent, api: Api, impostor: str, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    inventory = _inventory_file(tmp_path, "WS-0102")
    assert agent("--state-dir", str(state), "enroll", "--server", api.url, "--token",
                 api.token(), "--fingerprint", api.fingerprint, "--inventory",
                 str(inventory))[0] == 0
    identity = json.loads((state / "agent.json").read_text())
    identity["server"] = impostor  # same name and port shape, another certificate
    (state / "agent.json").write_text(json.dumps(identity))
    code, _out, err = agent("--state-dir", str(state), "run", "--once", "--inventory",
                           str(inventory))
    assert code == 3
    assert "does not match the pinned one" in err and "Traceback" not in err
    # Nothing reached the impostor's application: the inventory was not stored.
    assert _endpoints(api)["WS-0102"]["programs"] == 0


def test_enroll_with_a_ca_file(agent, api: Api, impostor: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    inventory = _inventory_file(tmp_path, "WS-0103", programs=2)
    code, _out, err = agent("--state-dir", str(state), "enroll", "--server",
                            api.url.replace("127.0.0.1", "localhost"), "--token", api.token(),
                            "--ca", str(api.cert), "--inventory", str(inventory))
    assert code == 0, err
    assert (state / "server-ca.pem").read_bytes() == api.cert.read_bytes()
    assert agent("--state-dir", str(state), "run", "--once", "--inventory",
                 str(inventory))[0] == 0
    assert _endpoints(api)["WS-0103"]["programs"] == 2
    identity = json.loads((state / "agent.json").read_text())
    identity["server"] = impostor.replace("127.0.0.1", "localhost")
    (state / "agent.json").write_text(json.dumps(identity))
    code, _out, err = agent("--state-dir", str(state), "run", "--once", "--inventory",
                            str(inventory))
    assert code == 3 and "not signed by the pinned CA" in err


def test_revoked_agent_stops_with_a_clear_error(agent, api: Api, tmp_path: Path, cli) -> None:
    state = tmp_path / "state"
    inventory = _inventory_file(tmp_path, "WS-0104")
    assert agent("--state-dir", str(state), "enroll", "--server", api.url, "--token",
                 api.token(), "--fingerprint", api.fingerprint, "--inventory",
                 str(inventory))[0] == 0
    assert cli("endpoints", "revoke", "ws-0104").code == 0
    code, _out, err = agent("--state-dir", str(state), "run", "--once", "--inventory",
                            str(inventory))
    assert code == 3 and "agent revoked" in err


def test_bad_usage_is_one_line(agent, api: Api, tmp_path: Path) -> None:
    code, _out, err = agent("--state-dir", str(tmp_path / "none"), "run", "--once",
                            "--inventory", str(tmp_path / "x.json"))
    assert code == 2 and "not enrolled" in err
    state = tmp_path / "state"
    inventory = _inventory_file(tmp_path, "WS-0105")
    assert agent("--state-dir", str(state), "enroll", "--server", api.url, "--token",
                 api.token(), "--fingerprint", api.fingerprint, "--inventory",
                 str(inventory))[0] == 0
    inventory.write_text('{"schema_version": 1, "hostname": "WS-0105", "os": {"arch": "z"}}')
    code, _out, err = agent("--state-dir", str(state), "run", "--once", "--inventory",
                            str(inventory))
    assert code == 2 and "os.name: Field required" in err
    code, _out, err = agent("--state-dir", str(state), "enroll", "--server", "http://plain:80",
                            "--token", "t", "--fingerprint", api.fingerprint)
    assert code == 2 and "expected https://" in err
    code, _out, err = agent("--state-dir", str(state), "enroll", "--server", api.url,
                            "--token", "not-a-token", "--fingerprint", api.fingerprint,
                            "--hostname", "x")
    assert code == 3 and "unknown enrollment token" in err


def test_results_wait_on_disk_until_the_server_is_back(agent, api: Api, tmp_path: Path) -> None:
    """A job result is written to the outbox before delivery; an unreachable server leaves it
    there (exit 1), and the next run delivers it, oldest first."""
    from patchflow import fleet

    state = tmp_path / "state"
    inventory = _inventory_file(tmp_path, "WS-0106")
    assert agent("--state-dir", str(state), "enroll", "--server", api.url, "--token",
                 api.token(), "--fingerprint", api.fingerprint, "--inventory",
                 str(inventory))[0] == 0
    delivered: list[tuple[int, dict[str, Any]]] = []
    original = (fleet.JOB_HANDLERS.poll, fleet.JOB_HANDLERS.result)
    fleet.JOB_HANDLERS.poll = lambda endpoint_id: [{"id": 7, "kind": "install"}]
    fleet.JOB_HANDLERS.result = lambda endpoint_id, job, result: delivered.append((job, result))
    identity = json.loads((state / "agent.json").read_text())
    real_server = identity["server"]
    try:
        from agent.state import StateDir

        StateDir(state).queue_result(5, {"state": "succeeded", "exit_code": 0})
        identity["server"] = "https://127.0.0.1:9"  # nothing listens there
        (state / "agent.json").write_text(json.dumps(identity))
        code, _out, err = agent("--state-dir", str(state), "run", "--once", "--inventory",
                                str(inventory))
        assert code == 1 and "cannot reach" in err and "1 result(s) kept" in err
        assert len(list((state / "outbox").glob("*.json"))) == 1

        identity["server"] = real_server
        (state / "agent.json").write_text(json.dumps(identity))
        code, out, err = agent("--state-dir", str(state), "run", "--once", "--inventory",
                               str(inventory))
        assert code == 0, err
        assert "1 job(s), 2 result(s) delivered" in out
    finally:
        fleet.JOB_HANDLERS.poll, fleet.JOB_HANDLERS.result = original
    assert [job for job, _result in delivered] == [5, 7]
    assert delivered[1][1]["state"] == "failed"
    assert "does not run install jobs" in delivered[1][1]["message"]
    assert list((state / "outbox").glob("*.json")) == []
