"""Rollback (`patchflow install rollback`): the uninstall commands (pure), what the server builds
from an endpoint's inventory and refuses, an agent older than rollbacks, the job and its audit
line on SQLite and MariaDB, the CLI's usage errors, and end to end on loopback: install, roll
back, the simulated agent's inventory loses the patch and the next scan finds it missing again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from agent.install import InstallSpec, JobExecutor, JobRejected
from agent.platforms.simulated import SimulatedPlatform
from agent.uninstall import UninstallRefused, interpret, uninstall_command
from models import (
    Group,
    InstalledProgram,
    InstalledUpdate,
    InstallJob,
    InstallJobItem,
    PolicyRing,
)
from models.db import session_scope
from patchflow.errors import NotFoundError, UserError
from patchflow.install import agent_jobs, dispatch
from patchflow.install.rollback import create_rollback, uninstall_spec
from tests.fixtures.agent.harness import Api
from tests.fixtures.install.agents import SimAgent, inventory, program
from tests.fixtures.install.loopback import (
    sim_fleet,
    synced_api_on_both_databases,
)
from tests.fixtures.install.world import World, build

PUTTY_81 = "{00000000-0000-0000-0000-000000081064}"
PUTTY_83 = "{00000000-0000-0000-0000-000000083064}"
KB_PATCH = {"id": 1, "kb": "KB5900110", "package_id": None, "version": None,
            "title": "2026-10 CU (KB5900110)", "vendor": "Microsoft"}
PUTTY = {"id": 2, "kb": None, "package_id": "PuTTY.PuTTY", "version": "0.83.0.0",
         "title": "PuTTY 0.83.0.0", "vendor": "Simon Tatham"}
PUTTY_MSI = [{"type": "msi", "arch": "x64", "product_code": PUTTY_83,
              "upgrade_code": None, "display_names": ["PuTTY release 0.83 (64-bit)"]}]


# --- the commands (pure) ------------------------------------------------------------------------


def test_uninstall_commands() -> None:
    assert uninstall_command({"type": "msu", "kb": "KB5034123"}) == [
        "wusa.exe", "/uninstall", "/kb:5034123", "/quiet", "/norestart"]
    assert uninstall_command({"type": "msi", "product_code": PUTTY_83.lower()}) == [
        "msiexec.exe", "/x", PUTTY_83, "/qn", "/norestart"]
    assert uninstall_command({"type": "exe", "installer_type": "nullsoft", "uninstall_string":
                              r'"C:\Program Files\7-Zip\Uninstall.exe"'}) == [
        r"C:\Program Files\7-Zip\Uninstall.exe", "/S"]
    # A switch the UninstallString already has is not given twice.
    assert uninstall_command({"type": "exe", "installer_type": "burn", "uninstall_string":
                              r'"C:\ProgramData\Package Cache\{X}\setup.exe" /uninstall'}) == [
        r"C:\ProgramData\Package Cache\{X}\setup.exe", "/uninstall", "/quiet", "/norestart"]
    assert uninstall_command({"type": "exe", "installer_type": "inno", "uninstall_string":
                              r"C:\Tools\unins000.exe"})[1:] == [
        "/VERYSILENT", "/SUPPRESSMSGBOXES", "/NORESTART"]


@pytest.mark.parametrize(("spec", "reason"), [
    ({"type": "exe", "installer_type": "nullsoft", "uninstall_string": None},
     "reports no UninstallString"),
    ({"type": "exe", "installer_type": "exe", "uninstall_string": r"C:\x\uninst.exe"},
     "no silent uninstall switches are known for a exe installer"),
    ({"type": "msi", "product_code": "PuTTY"}, "not a Windows Installer ProductCode"),
    ({"type": "msu", "kb": "KB5034123 & calc"}, "not a KB number"),
    ({"type": "cab"}, "not supported"),
    (None, "malformed job"),
])
def test_uninstall_refusals(spec: Any, reason: str) -> None:
    with pytest.raises(UninstallRefused, match=reason):
        uninstall_command(spec)


def test_uninstall_exit_codes() -> None:
    assert interpret(0, False)[0] == "succeeded"
    assert interpret(3010, False)[:1] == ("reboot pending",)
    assert interpret(3010, True)[2] is True
    assert "not installed" in interpret(1605, False)[1]
    assert interpret(2359303, False)[0] == "failed"


def test_spec_from_inventory() -> None:
    kb = uninstall_spec(KB_PATCH, ["kb5900110"], [], [])
    assert kb.spec == {"type": "msu", "kb": "KB5900110", "program": None}
    absent = uninstall_spec(KB_PATCH, ["KB5890010"], [], [])
    assert absent.spec is None and not absent.installed and "not installed here" in absent.reason
    entry = {**program("PuTTY release 0.83 (64-bit)", "0.83.0.0", "Simon Tatham"),
             "product_code": PUTTY_83}
    msi = uninstall_spec(PUTTY, [], [entry], PUTTY_MSI)
    assert msi.spec is not None and msi.spec["type"] == "msi"
    assert msi.spec["product_code"] == PUTTY_83 and msi.spec["program"]["version"] == "0.83.0.0"
    older = uninstall_spec(PUTTY, [], [{**entry, "version": "0.81.0.0",
                                        "product_code": PUTTY_81}], PUTTY_MSI)
    assert not older.installed and "is not what is installed here" in older.reason
    no_code = uninstall_spec(PUTTY, [], [{**entry, "product_code": None}], PUTTY_MSI)
    assert no_code.installed and "reports no ProductCode" in no_code.reason
    exe = uninstall_spec(
        {**PUTTY, "package_id": "7zip.7zip", "version": "25.01", "title": "7-Zip 25.01",
         "vendor": "Igor Pavlov"}, [], [program("7-Zip 25.01 (x64)", "25.01", "Igor Pavlov")],
        [{"type": "nullsoft", "arch": "x64", "display_names": []}])
    assert exe.spec is None and exe.installed
    assert "7-Zip 25.01 (x64) 25.01: the endpoint's inventory reports no UninstallString" \
        in exe.reason


# --- the agent ----------------------------------------------------------------------------------


def _uninstall_job(spec: dict[str, Any], job_id: int = 7) -> dict[str, Any]:
    row = type("Row", (), {"id": job_id, "job_id": 1, "attempts": 1, "allow_restart": False,
                           "uninstall": json.dumps(spec)})()
    return agent_jobs._uninstall_payload(row, KB_PATCH, False)


def test_agent_runs_an_uninstall_and_an_older_agent_refuses_it(tmp_path: Path) -> None:
    job = _uninstall_job({"type": "msu", "kb": "KB5900110", "program": None})
    assert job["kind"] == "uninstall" and "installer" not in job
    # What an agent from before rollbacks does with it: a malformed job, reported failed.
    with pytest.raises(JobRejected, match="without an installer description"):
        InstallSpec.parse(job)
    path = tmp_path / "inventory.json"
    path.write_text(json.dumps(inventory("WS-1", 5800, ["KB5900110", "KB5890010"], [])))
    platform = SimulatedPlatform(path)
    executor = JobExecutor(None, None, platform)  # type: ignore[arg-type]
    done = executor.run(job)
    assert (done["state"], done["exit_code"]) == ("succeeded", 0), done
    doc = platform.load_inventory()
    assert [u["kb"] for u in doc["updates"]] == ["KB5890010"]
    assert doc["simulate"]["ran"][0]["command"] == [
        "wusa.exe", "/uninstall", "/kb:5900110", "/quiet", "/norestart"]
    again = executor.run({**job, "attempt": 2})
    assert again["state"] == "failed" and again["exit_code"] == 2359303
    refused = executor.run(_uninstall_job({"type": "exe", "installer_type": "nullsoft"}))
    assert refused["state"] == "failed" and "UninstallString" in refused["message"]
    assert len(platform.load_inventory()["simulate"]["ran"]) == 2  # the refused one never ran


def test_windows_agent_runs_the_uninstall_command(tmp_path: Path) -> None:
    """The Windows platform hands the built command to its process seam (recorded here: this
    machine has no wusa) and reports a needed restart as Windows Installer does."""
    from agent.platforms.windows import WindowsPlatform
    from agent.platforms.windows.readers import DictRegistry

    calls: list[list[str]] = []

    class Recorder:
        def call(self, args: Any, timeout: float) -> tuple[int, str]:
            calls.append(list(args))
            return 3010, ""

    platform = WindowsPlatform(DictRegistry({}), processes=Recorder())
    executor = JobExecutor(None, None, platform)  # type: ignore[arg-type]
    done = executor.run(_uninstall_job({"type": "msi", "product_code": PUTTY_83}))
    assert done["state"] == "reboot pending" and done["exit_code"] == 3010
    assert calls == [["msiexec.exe", "/x", PUTTY_83, "/qn", "/norestart"]]


# --- the job (SQLite and MariaDB) ---------------------------------------------------------------


@pytest.fixture
def world(home: Path) -> World:
    with session_scope() as session:
        found = build(session)
        session.add(InstalledUpdate(endpoint_id=found.endpoints["WS-1"], kb="KB5900110"))
        session.add(InstalledProgram(endpoint_id=found.endpoints["WS-1"], name="7-Zip 25.01 (x64)",
                                     version="25.01", publisher="Igor Pavlov", arch="x64"))
        office = session.scalar(select(Group.id).where(Group.name == "Office"))
        session.add(PolicyRing(policy_id=found.policy, position=1, name="pilot",
                               group_ids=json.dumps([office])))
        return found


def test_rollback_job_by_endpoints_and_ring(world: World) -> None:
    with session_scope() as session:
        with pytest.raises(UserError, match="WS-2: KB5900110 is not installed here"):
            create_rollback(session, "KB5900110", ["WS-1", "WS-2"], None, "alice")
        with pytest.raises(UserError, match="give --endpoints H1,H2 or --ring R"):
            create_rollback(session, "KB5900110", ["WS-1"], "pilot", "alice")
        with pytest.raises(UserError, match="give --endpoints H1,H2 or --ring R"):
            create_rollback(session, "KB5900110", None, None, "alice")
        with pytest.raises(NotFoundError, match="no ring named 'broad'"):
            create_rollback(session, "KB5900110", None, "broad", "alice")
        with pytest.raises(UserError, match=r"cannot be rolled back on WS-1: .*UninstallString"):
            create_rollback(session, "7zip.7zip@25.01", ["WS-1"], None, "alice")
        assert session.scalar(select(InstallJob.id).limit(1)) is None  # nothing written
        job, out = create_rollback(session, "KB5900110", None, "Office/pilot", "alice")
        assert out == {"patch": "KB5900110", "scope": "Office/pilot", "to_uninstall": 1,
                       "refused": {},
                       "skipped": ["WS-2", "WS-3"]}
        job_id = job.id
    assert dispatch.start_job(job_id, None)["open"] == 1
    assert dispatch.resolve_items(job_id) == {"resolved": 0, "failed": 0}
    assert dispatch.content_plan(job_id) == []
    assert dispatch.dispatch(job_id)["dispatched"] == 1
    polled = agent_jobs.poll(world.endpoints["WS-1"])
    assert len(polled) == 1 and polled[0]["kind"] == "uninstall" and "installer" not in polled[0]
    assert polled[0]["uninstall"]["type"] == "msu" and polled[0]["attempt"] == 1
    agent_jobs.record_result(world.endpoints["WS-1"], polled[0]["id"], {
        "state": "succeeded", "exit_code": 0, "message": "uninstalled (exit code 0)",
        "details": {"result_id": "r1", "attempt": 1}})
    assert dispatch.finish_job(job_id)["succeeded"] == 1
    with session_scope() as session:
        from patchflow.install import show_job

        shown = show_job(session, job_id)
        assert shown["action"] == "uninstall" and shown["status"] == "done"
        assert [e["state"] for e in shown["items_detail"][0]["events"]] == [
            "pending", "dispatched", "succeeded"]
        assert session.scalar(select(InstallJobItem.installer_type)) == "msu"


def test_a_refused_endpoint_fails_at_once_with_the_reason(world: World) -> None:
    """7-Zip installed by an MSI here: WS-1 reports the ProductCode, WS-3 none (refused, its item
    failed with the reason, never offered); WS-2 does not have it (skipped)."""
    from models import PatchInstaller

    code = "{23170F69-40C1-2702-2501-000001000000}"
    with session_scope() as session:
        session.execute(update(PatchInstaller).values(type="msi"))
        session.add(InstalledProgram(endpoint_id=world.endpoints["WS-3"], name="7-Zip 25.01 (x64)",
                                     version="25.01", publisher="Igor Pavlov", arch="x64"))
        session.execute(update(InstalledProgram).where(
            InstalledProgram.endpoint_id == world.endpoints["WS-1"]).values(product_code=code))
    with session_scope() as session:
        job, out = create_rollback(session, "7zip.7zip@25.01", None, "pilot", "alice")
        job_id = job.id
    assert out["skipped"] == ["WS-2"] and out["to_uninstall"] == 1
    assert "WS-3" in out["refused"] and "reports no ProductCode" in out["refused"]["WS-3"]
    with session_scope() as session:
        items = {e: (s, t, m, u) for e, s, t, m, u in session.execute(
            select(InstallJobItem.endpoint_id, InstallJobItem.state, InstallJobItem.installer_type,
                   InstallJobItem.message, InstallJobItem.uninstall)
            .where(InstallJobItem.job_id == job_id))}
    state, kind, _message, spec = items[world.endpoints["WS-1"]]
    assert (state, kind) == ("pending", "msi") and json.loads(spec)["product_code"] == code
    state, kind, message, spec = items[world.endpoints["WS-3"]]
    assert (state, kind, spec) == ("failed", None, None)
    assert message == ("not uninstallable here: the endpoint's inventory reports no ProductCode "
                       "for '7-Zip 25.01 (x64) 25.01' (an MSI install): it cannot be "
                       "uninstalled silently")
    dispatch.start_job(job_id, None)
    assert dispatch.dispatch(job_id)["dispatched"] == 1  # the refused item is never offered
    assert agent_jobs.poll(world.endpoints["WS-3"]) == []


def test_rollback_cli_errors_and_audit(world: World, cli: Any) -> None:
    for args, text in (
            (["KB1234567", "--endpoints", "WS-1"], "no patch 'KB1234567'"),
            (["KB5900110"], "give --endpoints H1,H2 or --ring R"),
            (["KB5900110", "--endpoints", "WS-1", "--ring", "pilot"], "one of them"),
            (["KB5900110", "--ring", "nope"], "no ring named 'nope'"),
            (["KB5900110", "--endpoints", "WS-9"], "no endpoint named 'WS-9'"),
            (["7zip.7zip@25.01", "--endpoints", "WS-1"], "UninstallString")):
        done = cli("install", "rollback", *args)
        assert done.code == 2, (args, done.out, done.err)
        assert text in done.err and len(done.err.strip().splitlines()) == 1, done.err
        assert "Traceback" not in done.err
    from patchflow.install import launch

    launched: list[int] = []
    launch.LAUNCHER.insert(0, lambda job_id: launched.append(job_id) or 4242)
    try:
        done = cli("install", "rollback", "KB5900110", "--ring", "pilot", "--json")
    finally:
        launch.LAUNCHER.pop(0)
    assert done.code == 0, done.err
    out = json.loads(done.out)
    assert out["action"] == "uninstall" and out["skipped"] == ["WS-2", "WS-3"]
    assert launched == [out["job_id"]]
    audit = json.loads(cli("audit", "list", "--json").out)
    assert audit[0]["action"] == "install.rollback"
    assert audit[0]["target"] == f"job {out['job_id']}"
    assert audit[0]["detail"] == "patch KB5900110 on Office/pilot"


# --- end to end on loopback ---------------------------------------------------------------------


api = synced_api_on_both_databases("rollback", {
    "install": {"poll_seconds": 0.1, "retry_delay_s": 0, "item_timeout_s": 30},
})


@pytest.fixture
def fleet(api: Api, tmp_path: Path) -> Iterator[Callable[..., SimAgent]]:
    with sim_fleet(api, tmp_path) as make:
        yield make


def _json(result: Any) -> Any:
    assert result.code == 0, result.err
    return json.loads(result.out)


def _missing(cli: Any) -> set[str]:
    return {row["kb"] or row["package_id"] for row in _json(cli("missing", "--json"))}


def _wait_for(check: Callable[[], bool], state: Callable[[], Any], seconds: float = 30) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not reached in time; last state: {state()}")
        time.sleep(0.2)


@pytest.mark.usefixtures("prefect")
def test_install_then_roll_back_on_loopback(api: Api, fleet: Callable[..., SimAgent],
                                            cli: Any) -> None:
    putty = {**program("PuTTY release 0.81 (64-bit)", "0.81.0.0", "Simon Tatham"),
             "product_code": PUTTY_81}
    ws1 = fleet(inventory("WS-1", 5800, ["KB5890010"], [
        putty, program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov")]))
    ws1.runner.upload_inventory()
    assert _json(cli("scan", "--all", "--json"))["scanned"] == 1
    before = _missing(cli)
    assert {"KB5900110", "PuTTY.PuTTY", "7zip.7zip"} <= before
    ws1.start()
    for ref in ("KB5900110", "PuTTY.PuTTY", "7zip.7zip"):
        assert _json(cli("install", "now", ref, "--endpoints", "WS-1", "--wait",
                         "--json"))["succeeded"] == 1
    _wait_for(lambda: not {"KB5900110", "PuTTY.PuTTY", "7zip.7zip"} & _missing(cli),
              lambda: _missing(cli))
    installed = {p["name"]: p for p in ws1.doc["programs"]}
    assert installed["PuTTY release 0.83 (64-bit)"]["product_code"] == PUTTY_83

    kb = _json(cli("install", "rollback", "KB5900110", "--endpoints", "WS-1", "--wait",
                   "--json"))
    assert (kb["action"], kb["succeeded"], kb["failed"]) == ("uninstall", 1, 0), kb
    msi = _json(cli("install", "rollback", "PuTTY.PuTTY@0.83.0.0", "--endpoints", "ws-1",
                    "--wait", "--json"))
    assert (msi["succeeded"], msi["failed"]) == (1, 0), msi
    refused = cli("install", "rollback", "7zip.7zip@25.01", "--endpoints", "WS-1", "--wait")
    assert refused.code == 2 and "UninstallString" in refused.err

    doc = ws1.doc
    assert "KB5900110" not in {u["kb"] for u in doc["updates"]}
    assert not any(p["name"].startswith("PuTTY") for p in doc["programs"])
    assert any(p["name"].startswith("7-Zip") for p in doc["programs"])  # refused: untouched
    commands = [r["command"] for r in doc["simulate"]["ran"] if r.get("action") == "uninstall"]
    assert commands == [["wusa.exe", "/uninstall", "/kb:5900110", "/quiet", "/norestart"],
                        ["msiexec.exe", "/x", PUTTY_83, "/qn", "/norestart"]]
    # The agent's fresh inventory is rescanned: the KB is missing again; PuTTY, no longer
    # installed at all, is not missing (nothing to update).
    _wait_for(lambda: "KB5900110" in _missing(cli), lambda: _missing(cli))
    assert "PuTTY.PuTTY" not in _missing(cli)
    shown = _json(cli("jobs", "show", str(kb["job_id"]), "--json"))
    assert shown["action"] == "uninstall"
    assert shown["items_detail"][0]["message"].startswith("uninstalled (exit code 0)")
    assert "rollback job" in cli("jobs", "show", str(kb["job_id"])).out
    actions = [e["action"] for e in _json(cli("audit", "list", "--json"))]
    assert actions[:2] == ["install.rollback", "install.rollback"]
