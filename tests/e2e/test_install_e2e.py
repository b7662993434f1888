"""Select and install end to end on loopback, on SQLite and MariaDB: the real HTTPS server,
simulated agents enrolled with the pinned certificate, the sample catalog synced by the sync
flow, installers served by a loopback vendor, the scan, the install flow, the rescan.

Covers: EULA refusal then acceptance; succeeded, failed (with its reason), reboot pending and
a retried install; a vendor file whose hash does not match is never offered; a result posted
twice is recorded once; an agent killed mid-install ends as "no result from agent"; a
scheduled scan of an auto-install policy installs (and restarts) on its non-roaming endpoints;
the admin API and the agents' content route.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.fixtures.agent.harness import Api, wait_rescanned
from tests.fixtures.install.agents import SimAgent, inventory, program
from tests.fixtures.install.loopback import (
    sim_fleet,
    synced_api_on_both_databases,
)

pytestmark = pytest.mark.usefixtures("prefect")
TAMPERED = frozenset({"vlc-3.0.21-win64.exe"})


api = synced_api_on_both_databases("install", {
    "install": {"poll_seconds": 0.1, "retry_delay_s": 0, "item_timeout_s": 30},
}, TAMPERED)


@pytest.fixture
def fleet(api: Api, tmp_path: Path) -> Iterator[Callable[..., SimAgent]]:
    """Make agents; every one started is stopped at the end."""
    with sim_fleet(api, tmp_path) as make:
        yield make


def _json(result: Any) -> Any:
    assert result.code == 0, result.err
    return json.loads(result.out)


def _missing(cli: Any) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for row in _json(cli("missing", "--json")):
        found.setdefault(row["endpoint"], set()).add(row["kb"] or row["package_id"])
    return found


def _wait_for(check: Callable[[], bool], seconds: float = 30.0,
              state: Callable[[], Any] = lambda: None) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in time; last state: {state()}")
        time.sleep(0.2)


def _events(api: Api, item_id: int) -> int:
    return api.count(f"install_item_events WHERE item_id = {int(item_id)}")


def test_select_accept_install_and_rescan(api: Api, fleet: Callable[..., SimAgent],
                                         cli: Any) -> None:
    ws1 = fleet(inventory("WS-1", 5800, ["KB5890010"], [
        program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov"),
        program("Java 8 Update 431 (64-bit)", "8.0.4310.10", "Oracle Corporation")],
        {"exit_codes": {"KB5900110": 3010}}))
    ws2 = fleet(inventory("WS-2", 6000, ["KB5900110", "KB5900150"], [
        program("7-Zip 24.08", "24.08", "Igor Pavlov", "x86"),
        program("VLC media player", "3.0.20", "VideoLAN")],
        {"exit_codes": {"7zip.7zip": 1603}}))
    ws3 = fleet(inventory("WS-3", 6000, ["KB5900110", "KB5900150"], [
        program("Mozilla Firefox (x64 en-US)", "140.0", "Mozilla"),
        program("Notepad++ (64-bit x64)", "8.6.9", "Notepad++ Team")],
        {"exit_codes": {"Mozilla.Firefox": [1618, 0]}}))
    for agent in (ws1, ws2, ws3):
        agent.runner.upload_inventory()
    assert _json(cli("scan", "--all", "--json"))["scanned"] == 3
    assert _missing(cli) == {"WS-1": {"KB5900110", "KB5900150", "7zip.7zip",
                                      "Oracle.JavaRuntimeEnvironment"},
                             "WS-2": {"7zip.7zip", "VideoLAN.VLC"},
                             "WS-3": {"Mozilla.Firefox", "Notepad++.Notepad++"}}
    listed = {r["patch"]: r for r in _json(cli("install", "list", "--json"))}
    assert listed["7zip.7zip@25.01"]["endpoints"] == 2
    java = "Oracle.JavaRuntimeEnvironment@8.0.4510.9"
    assert listed[java]["eula_status"] == "Not Accepted"

    for args in (["KB5900110", "--endpoints", "WS-1"], ["7zip.7zip", "--all-affected"],
                 [java, "--all-affected"], ["VideoLAN.VLC", "--all-affected"],
                 ["Mozilla.Firefox", "--endpoints", "WS-3"],
                 ["Notepad++.Notepad++", "--all-affected"]):
        assert cli("install", "select", *args).code == 0
    refused = cli("install", "start", "--wait")
    assert refused.code == 2 and "EULA is not accepted" in refused.err
    assert "patchflow eula accept" in refused.err and "Traceback" not in refused.err
    assert "Not Accepted" in cli("eula", "show", java).out
    accepted = _json(cli("eula", "accept", java, "--json"))
    assert accepted["accepted_by"] and accepted["accepted_at"]
    assert _json(cli("install", "list", "--json"))[0]["selected"] >= 1

    for agent in (ws1, ws2, ws3):
        agent.start()
    run = cli("install", "start", "--wait", "--json")
    summary = _json(run)
    assert "Traceback" not in run.err
    assert (summary["succeeded"], summary["failed"], summary["reboot_pending"]) == (4, 2, 1)
    assert summary["artifact"] == f"install-job-{summary['job_id']}"

    job = _json(cli("jobs", "show", str(summary["job_id"]), "--json"))
    items = {(i["endpoint"], i["patch"].split("@")[0]): i for i in job["items_detail"]}
    failed_zip = items[("WS-2", "7zip.7zip")]
    assert failed_zip["state"] == "failed" and failed_zip["exit_code"] == 1603
    assert "exit code 1603" in failed_zip["message"]
    vlc = items[("WS-2", "VideoLAN.VLC")]
    assert vlc["state"] == "failed" and "SHA-256 mismatch" in vlc["message"]
    assert [e["state"] for e in vlc["events"]] == ["pending", "failed"]
    assert not any(r["patch"].startswith("VideoLAN") for r in ws2.doc["simulate"]["ran"])
    assert items[("WS-1", "KB5900110")]["state"] == "reboot pending"
    firefox = items[("WS-3", "Mozilla.Firefox")]
    assert firefox["state"] == "succeeded" and firefox["attempts"] == 2
    assert [e["state"] for e in firefox["events"]].count("dispatched") == 2
    assert items[("WS-2", "7zip.7zip")]["sha256"] != items[("WS-1", "7zip.7zip")]["sha256"]

    # The fresh inventories are rescanned in the background: installed patches drop off.
    expected = {"WS-1": {"KB5900150"}, "WS-2": {"7zip.7zip", "VideoLAN.VLC"}}
    _wait_for(lambda: _missing(cli) == expected, state=lambda: _missing(cli))
    hosts = {e["hostname"]: e for e in _json(cli("endpoints", "list", "--json"))}
    assert hosts["WS-1"]["pending_reboot"] is True and hosts["WS-3"]["scan_state"] == "Up-to-Date"
    assert "1 reboot pending" in _json(cli("jobs", "list", "--json"))[0]["summary"]

    # A result posted again (a lost response, a re-sent outbox file) is recorded once.
    item = items[("WS-1", "7zip.7zip")]
    with sa.create_engine(api.db_url).connect() as conn:
        result_id = conn.execute(sa.text("SELECT result_id FROM install_job_items WHERE id = :i"),
                                 {"i": item["id"]}).scalar_one()
    before = _events(api, item["id"])
    # The agent's loop polls on ws1.client's one connection from its own thread: stopped first,
    # or the two threads' requests interleave on it (http.client: "Idle").
    ws1.stop()
    again = ws1.client.request("POST", f"/api/v1/agent/jobs/{item['id']}/result", {
        "state": "succeeded", "exit_code": 0, "details": {"result_id": result_id,
                                                           "attempt": 1}})
    assert again == {"accepted": True} and _events(api, item["id"]) == before


def test_agent_killed_mid_install_ends_as_no_result(api: Api, fleet: Callable[..., SimAgent],
                                                    cli: Any, tmp_path: Path) -> None:
    """A real `patchflow-agent run` process, killed while its installer runs: the item fails
    with "no result from agent" once its timeout (6 s here) has passed."""
    from patchflow import config

    victim = fleet(inventory("WS-K", 6000, ["KB5900110", "KB5900150"], [
        program("Notepad++ (64-bit x64)", "8.6.9", "Notepad++ Team")],
        {"install_seconds": 120}))
    victim.runner.upload_inventory()
    assert cli("scan", "--endpoints", "WS-K").code == 0
    engine = sa.create_engine(api.db_url)
    reported = "SELECT inventory_at FROM endpoints WHERE hostname = 'WS-K'"
    installing = "SELECT COUNT(*) FROM install_job_items WHERE state = 'installing'"

    def value(sql: str) -> Any:
        with engine.connect() as conn:
            return conn.execute(sa.text(sql)).scalar_one()

    before = value(reported)
    config.write_config({"install": {"item_timeout_s": 6}})
    process = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "--state-dir", str(victim.state_dir), "run",
         "--platform", "simulated", "--inventory", str(victim.inventory_path),
         "--poll-seconds", "0.2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill_once_installing() -> None:
        _wait_for(lambda: bool(value(installing)))
        process.kill()

    killer = threading.Thread(target=kill_once_installing, daemon=True)
    try:
        _wait_for(lambda: value(reported) != before)  # the agent reports as it starts
        killer.start()
        run = cli("install", "now", "Notepad++.Notepad++", "--endpoints", "WS-K", "--wait",
                  "--json")
    finally:
        process.kill()
        process.wait(timeout=10)
        if killer.is_alive():
            killer.join(timeout=40)
        engine.dispose()
        config.write_config({"install": {"item_timeout_s": 30}})
    summary = _json(run)
    assert summary["failed"] == 1 and summary["succeeded"] == 0
    job = _json(cli("jobs", "show", str(summary["job_id"]), "--json"))
    item = job["items_detail"][0]
    assert item["message"].startswith("no result from agent")
    assert [e["state"] for e in item["events"]][-2:] == ["installing", "failed"]


def test_scheduled_scan_auto_installs_on_non_roaming_endpoints(
        api: Api, fleet: Callable[..., SimAgent], cli: Any, tmp_path: Path) -> None:
    from flows.scan import scan

    assert cli("groups", "add", "Office").code == 0
    assert cli("policies", "add", "AutoP", "--patch-server", "local", "--groups", "Office",
               "--auto-install", "--auto-restart").code == 0
    office = fleet(inventory("WS-A", 5800, ["KB5890010", "KB5900150"], [],
                             {"exit_codes": {"KB5900110": 3010}}), group="Office")
    office.runner.upload_inventory()
    roaming = tmp_path / "roaming.json"
    roaming.write_text(json.dumps(inventory("LAPTOP-R", 5800, ["KB5890010"], [])))
    assert cli("endpoints", "import", str(roaming), "--group", "Office").code == 0
    with sa.create_engine(api.db_url).begin() as conn:
        conn.execute(sa.text("UPDATE endpoints SET roaming = 1 WHERE hostname = 'LAPTOP-R'"))
    office.start()
    summary = scan({"policy": "AutoP"}, trigger="scheduled")
    assert summary["scanned"] == 2
    [installed] = summary["install_jobs"]
    assert installed["succeeded"] == 1 and installed["items"] == 1  # the laptop is left out
    job = _json(cli("jobs", "show", str(installed["job_id"]), "--json"))
    assert job["trigger"] == "scheduled" and job["allow_restart"] is True
    assert "restarting" in job["items_detail"][0]["message"]
    _wait_for(lambda: office.doc.get("simulate", {}).get("restarts") == 1)
    assert office.doc["pending_reboot"] is False


def test_admin_api_and_agent_content_route(api: Api, fleet: Callable[..., SimAgent]) -> None:
    from patchflow.catalog.content import ContentStore
    from patchflow.install import launch

    ws = fleet(inventory("WS-API", 5800, ["KB5890010"], []))
    ws.runner.upload_inventory()
    # The upload's own background rescan first: two scans of one endpoint at once may
    # deadlock on MariaDB (a flow's scan task retries that; this direct call would not).
    wait_rescanned(api, "WS-API")
    from patchflow.scanning.service import scan_now

    with sa.create_engine(api.db_url).connect() as conn:
        scan_now([conn.execute(sa.text("SELECT id FROM endpoints")).scalar_one()])
    headers = {"Authorization": f"Bearer {api.admin_token()}"}
    launched: list[int] = []
    launch.LAUNCHER[0], original = launched.append, launch.LAUNCHER[0]  # type: ignore[assignment]
    try:
        with api.client(headers=headers) as http:
            assert http.get("/api/v1/admin/install/patches").json()[0]["patch"] == "KB5900110"
            assert http.post("/api/v1/admin/install/selection",
                             json={"patch": "KB5900110"}).status_code == 400
            bad = http.post("/api/v1/admin/install/selection", json={"patch": 3, "x": 1})
            assert bad.status_code == 422 and list(bad.json()) == ["error"]
            assert http.get("/api/v1/admin/install/patches/KB1").status_code == 404
            assert http.post("/api/v1/admin/install/jobs", json={}).status_code == 400
            selected = http.post("/api/v1/admin/install/selection",
                                 json={"patch": "KB5900110", "endpoints": ["WS-API"]}).json()
            assert selected["selected"] == 1
            job = http.post("/api/v1/admin/install/jobs", json={"allow_restart": True})
            assert job.status_code == 201 and job.json()["status"] == "pending"
            assert launched == [job.json()["id"]]
            assert http.get("/api/v1/admin/install/selection").json() == []
            cancelled = http.post(f"/api/v1/admin/install/jobs/{launched[0]}/cancel").json()
            assert cancelled["status"] == "cancelled" and cancelled["cancelled_items"] == 1
            assert http.post(f"/api/v1/admin/install/jobs/{launched[0]}/cancel"
                             ).status_code == 400
            accepted = http.post("/api/v1/admin/eula/Oracle.JavaRuntimeEnvironment@8.0.4510.9"
                                 "/accept").json()
            assert accepted["accepted_by"] == "api:tests"
            assert http.get("/api/v1/admin/install/jobs").json()[0]["status"] == "cancelled"
            assert http.get("/api/v1/admin/install/jobs/999").status_code == 404
        data = b"some installer bytes"
        digest = __import__("hashlib").sha256(data).hexdigest()
        with api.client() as http:
            assert http.get(f"/content/sha256/{digest}").status_code == 401
        assert "not in this server" in str(_refused(ws, f"/content/sha256/{digest}"))
        ContentStore().put_bytes(data, digest)
        out = (tmp := Path(ws.state_dir) / "dl.bin").open("wb")
        with out:
            assert ws.client.download(f"/content/sha256/{digest}", out) == len(data)
        assert tmp.read_bytes() == data
    finally:
        launch.LAUNCHER[0] = original


def _refused(agent: SimAgent, path: str) -> Exception:
    import io

    from agent.transport import RequestRefused

    try:
        agent.client.download(path, io.BytesIO())
    except RequestRefused as exc:
        assert exc.status == 404
        return exc
    raise AssertionError("expected a 404")
