"""The install service on SQLite and MariaDB, without Prefect or HTTP: selection rules, the EULA
refusal, the item state machine with its events, idempotent results, retries, the per-item
timeout, cancel, resume, and the jobs a scheduled scan creates."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from models import (
    EulaAcceptance,
    InstallItemEvent,
    InstallJob,
    InstallJobItem,
    InstallSelection,
    MissingPatch,
)
from models.db import session_scope
from patchflow import install as svc
from patchflow.errors import NotFoundError, UserError
from patchflow.install import agent_jobs, dispatch
from patchflow.install.auto import create_auto_jobs
from patchflow.install.settings import InstallSettings
from patchflow.scanning.missing_query import MissingFilters
from tests.fixtures.install.world import PAYLOADS, World, build, sha
from tests.support.httpserver import serve_files

FAST = InstallSettings(max_attempts=2, item_timeout_s=60, retry_delay_s=0, poll_seconds=0.01)


@pytest.fixture
def world(home: Path) -> World:
    with session_scope() as session:
        return build(session)


def _items(job_id: int) -> dict[tuple[str, str], InstallJobItem]:
    """(host, patch key) → item, for assertions."""
    with session_scope() as session:
        job = svc.show_job(session, job_id, events=False)
        rows = {i.id: i for i in session.scalars(
            select(InstallJobItem).where(InstallJobItem.job_id == job_id))}
    names = {"KB5900110": "kb", "7zip.7zip@25.01": "7zip",
             "Oracle.JavaRuntimeEnvironment@8.0.4510.9": "java"}
    return {(i["endpoint"], names[i["patch"]]): rows[i["id"]] for i in job["items_detail"]}


def _events(item_id: int) -> list[str]:
    with session_scope() as session:
        return list(session.scalars(select(InstallItemEvent.state)
                                    .where(InstallItemEvent.item_id == item_id)
                                    .order_by(InstallItemEvent.id)))


def test_selection_is_checked_and_persists_until_started(world: World) -> None:
    with session_scope() as session:
        out = svc.select_pairs(session, "7zip.7zip", ["ws-1", "WS-2"], who="alice")
        assert out == {"patch": "7zip.7zip@25.01", "patch_id": world.patches["7zip"],
                       "added": 2, "selected": 2, "note": None}
        assert svc.select_pairs(session, "KB5900110", all_affected=True)["selected"] == 3
        java = svc.select_pairs(session, "Oracle.JavaRuntimeEnvironment", ["WS-3"])
        assert "EULA accepted" in java["note"]
        with pytest.raises(UserError, match="--endpoints H1,H2 or --all-affected"):
            svc.select_pairs(session, "KB5900110")
        with pytest.raises(NotFoundError, match="no endpoint named 'NOPE'"):
            svc.select_pairs(session, "KB5900110", ["NOPE"])
        with pytest.raises(NotFoundError, match="no patch"):
            svc.select_pairs(session, "KB1234567", all_affected=True)
    with session_scope() as session:  # a pair the last scan did not find missing
        session.execute(delete(MissingPatch).where(
            MissingPatch.endpoint_id == world.endpoints["WS-3"],
            MissingPatch.patch_id == world.patches["7zip"]))
    with session_scope() as session:
        with pytest.raises(UserError, match="not missing on WS-3"):
            svc.select_pairs(session, "7zip.7zip@25.01", ["WS-3"])
        rows = {r["patch"]: r for r in svc.install_list(session)}
        assert rows["KB5900110"]["endpoints"] == 3 and rows["KB5900110"]["selected"] == 3
        assert rows["7zip.7zip@25.01"]["endpoints"] == 2
        assert rows["Oracle.JavaRuntimeEnvironment@8.0.4510.9"]["eula_status"] == "Not Accepted"
        assert [r["patch"] for r in svc.install_list(session, MissingFilters(eula="accepted"))] == [
            "KB5900110", "7zip.7zip@25.01"]
        shown = svc.install_show(session, "7zip.7zip@25.01")
        assert [e["endpoint"] for e in shown["endpoints"] if e["selected"]] == ["WS-1", "WS-2"]
        assert svc.unselect_pairs(session, "7zip.7zip@25.01", ["WS-1"])["selected"] == 1
        assert svc.refresh_selection(session) == 5
        assert svc.selection_rows(session) == []


def test_eula_refusal_then_acceptance_with_who_and_when(world: World) -> None:
    with session_scope() as session:
        svc.select_pairs(session, "Oracle.JavaRuntimeEnvironment@8.0.4510.9", ["WS-1"])
        svc.select_pairs(session, "7zip.7zip@25.01", ["WS-1"])
    with session_scope() as session, pytest.raises(UserError) as refused:
        svc.start_from_selection(session, "alice", settings=FAST)
    message = str(refused.value)
    assert "EULA is not accepted" in message and "patchflow eula accept" in message
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(InstallJob)) == 0
        assert session.scalar(select(func.count()).select_from(InstallSelection)) == 2
        assert svc.show_eula(session, "Oracle.JavaRuntimeEnvironment@8.0.4510.9")[
            "eula_status"] == "Not Accepted"
        first = svc.accept_eula(session, "Oracle.JavaRuntimeEnvironment@8.0.4510.9", "alice")
        assert first["accepted_by"] == "alice" and first["note"] is None
    with session_scope() as session:
        again = svc.accept_eula(session, "Oracle.JavaRuntimeEnvironment@8.0.4510.9", "bob")
        assert again["accepted_by"] == "alice" and "already accepted" in again["note"]
        assert "no EULA" in svc.accept_eula(session, "KB5900110", "bob")["note"]
        assert session.scalar(select(func.count()).select_from(EulaAcceptance)) == 1
        job = svc.start_from_selection(session, "alice", settings=FAST)
        assert job.status == "pending" and job.max_attempts == 2
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(InstallSelection)) == 0
        assert {i["state"] for i in svc.show_job(session, job.id)["items_detail"]} == {"pending"}


def _post(endpoint_id: int, item_id: int, state: str, **fields: object) -> None:
    agent_jobs.record_result(endpoint_id, item_id, {"state": state, **fields})


def test_state_machine_results_retries_timeouts(world: World) -> None:
    ws1, ws2, ws3 = (world.endpoints[h] for h in ("WS-1", "WS-2", "WS-3"))
    with session_scope() as session:
        from models import Endpoint

        session.execute(update(Endpoint).where(Endpoint.id == ws3).values(roaming=True))
        pairs = [(world.patches[p], e) for p in ("kb", "7zip") for e in (ws1, ws2, ws3)]
        job_id = svc.create_job(session, pairs, "alice", settings=FAST).id
    assert dispatch.start_job(job_id, None)["items"] == 6
    assert dispatch.resolve_items(job_id) == {"resolved": 6, "failed": 0}
    items = _items(job_id)
    assert items[("WS-1", "kb")].installer_type == "wua"
    x64 = sha(PAYLOADS["7z2501-x64.exe"])
    assert items[("WS-1", "7zip")].download_url == f"/content/sha256/{x64}"
    assert items[("WS-2", "7zip")].content_sha256 == sha(PAYLOADS["7z2501.exe"])  # x86 program
    assert items[("WS-3", "7zip")].download_url.startswith("https://downloads.patchflow.invalid")

    plan = dispatch.content_plan(job_id)
    assert sorted(p["sha256"] for p in plan) == sorted(
        sha(PAYLOADS[n]) for n in ("7z2501-x64.exe", "7z2501.exe"))  # not the roaming one's
    with serve_files() as vendor:
        vendor.files["/7z2501-x64.exe"] = PAYLOADS["7z2501-x64.exe"]
        vendor.files["/7z2501.exe"] = b"a tampered 7-zip"
        for entry in plan:
            entry["url"] = f"{vendor.url}/{entry['url'].rsplit('/', 1)[1]}"
        errors = dispatch.fetch_content(plan)
    assert list(errors) == [sha(PAYLOADS["7z2501.exe"])]
    assert dispatch.dispatch(job_id, errors) == {"dispatched": 5, "failed": 1, "waiting": 0}
    bad = _items(job_id)[("WS-2", "7zip")]
    assert bad.state == "failed" and "SHA-256 mismatch" in bad.message
    assert "not offered to any endpoint" in bad.message
    assert _events(bad.id) == ["pending", "failed"]  # never dispatched
    assert [j["installer"]["type"] for j in agent_jobs.poll(ws2)] == ["wua"]

    jobs = {j["patch"]["package_id"] or j["patch"]["kb"]: j for j in agent_jobs.poll(ws1)}
    assert jobs["7zip.7zip"]["installer"]["file_name"] == "7z2501-x64.exe"
    assert jobs["7zip.7zip"]["installer"]["url"].startswith("/content/sha256/")
    assert jobs["7zip.7zip"]["patch"]["package_name"] == "7-Zip"
    assert jobs["KB5900110"]["installer"] == {"type": "wua", "kb": "KB5900110"}
    zip1, kb1 = jobs["7zip.7zip"]["id"], jobs["KB5900110"]["id"]

    # Progress, then the result; posting the result again changes nothing.
    _post(ws1, zip1, "downloading", details={"attempt": 1})
    _post(ws1, zip1, "installing", details={"attempt": 1})
    _post(ws1, zip1, "downloading", details={"attempt": 1})  # late: never goes backwards
    done = {"exit_code": 0, "message": "installed", "details": {"result_id": "r1", "attempt": 1}}
    _post(ws1, zip1, "succeeded", **done)
    _post(ws1, zip1, "succeeded", **done)
    assert _events(zip1) == ["pending", "dispatched", "downloading", "installing", "succeeded"]
    with pytest.raises(NotFoundError, match=f"no job {zip1}"):
        _post(ws2, zip1, "succeeded", exit_code=0)

    # A retryable failure goes back to pending, is offered again, and a stale result of the
    # first attempt is ignored.
    _post(ws1, kb1, "failed", exit_code=1618, details={"result_id": "r2", "attempt": 1})
    item = _items(job_id)[("WS-1", "kb")]
    assert item.state == "pending" and "retry 2 of 2 queued" in item.message
    sweep = dispatch.sweep(job_id, retry_delay_s=0)
    assert sweep["retried"] == 1
    _post(ws1, kb1, "failed", exit_code=1618, details={"result_id": "r2", "attempt": 1})
    assert _items(job_id)[("WS-1", "kb")].state == "dispatched"
    assert agent_jobs.poll(ws1)[0]["attempt"] == 2
    _post(ws1, kb1, "reboot pending", exit_code=3010, details={"result_id": "r3", "attempt": 2})
    assert _events(kb1) == ["pending", "dispatched", "failed", "pending", "dispatched",
                            "reboot pending"]
    # A second retryable failure on the last attempt is final.
    kb2 = _items(job_id)[("WS-2", "kb")].id
    _post(ws2, kb2, "failed", exit_code=1603, message="fatal", details={"result_id": "x"})
    assert _items(job_id)[("WS-2", "kb")].message == "fatal"

    # The roaming endpoint never answers: "no result from agent" after the deadline; its
    # late result still wins over that guess.
    with session_scope() as session:
        session.execute(update(InstallJobItem).where(InstallJobItem.endpoint_id == ws3)
                        .values(dispatched_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)))
    state = dispatch.sweep(job_id, retry_delay_s=0)
    assert state["timed_out"] == 2 and state["open"] == 0
    late = _items(job_id)[("WS-3", "7zip")]
    assert late.state == "failed" and late.message.startswith("no result from agent")
    _post(ws3, late.id, "succeeded", exit_code=0, details={"result_id": "r9", "attempt": 1})
    late = _items(job_id)[("WS-3", "7zip")]
    assert late.state == "succeeded" and "reported after" in late.message
    summary = dispatch.finish_job(job_id)
    assert summary["status"] == "done"
    assert (summary["succeeded"], summary["failed"], summary["reboot_pending"]) == (2, 3, 1)
    assert summary["summary"] == "2 succeeded, 3 failed, 1 reboot pending"


def test_cancel_closes_open_items_and_a_restarted_flow_resumes(world: World) -> None:
    ws1, ws2 = world.endpoints["WS-1"], world.endpoints["WS-2"]
    with session_scope() as session:
        cancelled = svc.create_job(session, [(world.patches["kb"], ws1)], "a", settings=FAST).id
        resumed = svc.create_job(session, [(world.patches["kb"], ws2)], "a", settings=FAST).id
    for job_id in (cancelled, resumed):
        dispatch.start_job(job_id, None)
        dispatch.resolve_items(job_id)
        dispatch.dispatch(job_id, {})
    with session_scope() as session:
        out = svc.cancel_job(session, cancelled, "bob")
    assert out["status"] == "cancelled" and out["cancelled_items"] == 1
    with session_scope() as session, pytest.raises(UserError, match="already cancelled"):
        svc.cancel_job(session, cancelled, "bob")
    assert dispatch.await_results(cancelled, 0, 0.01)["open"] == 0
    assert agent_jobs.poll(ws1) == []
    assert dispatch.finish_job(cancelled)["status"] == "cancelled"

    # The flow of `resumed` "died" after dispatch; a new run of the steps changes nothing that
    # was done, the agent's result lands, and the job ends.
    assert dispatch.unfinished_jobs() == [resumed]
    assert dispatch.start_job(resumed, "second-run")["status"] == "running"
    assert dispatch.resolve_items(resumed) == {"resolved": 0, "failed": 0}
    assert dispatch.dispatch(resumed, dispatch.fetch_content(dispatch.content_plan(resumed))) \
        == {"dispatched": 0, "failed": 0, "waiting": 0}
    item = agent_jobs.poll(ws2)[0]
    assert item["attempt"] == 1
    _post(ws2, item["id"], "succeeded", exit_code=0, details={"attempt": 1})
    assert dispatch.await_results(resumed, 0, 0.01)["counts"] == {"succeeded": 1}
    assert dispatch.finish_job(resumed)["status"] == "done"
    assert dispatch.unfinished_jobs() == []


def test_scheduled_auto_install_skips_roaming_and_unaccepted_eulas(world: World) -> None:
    from models import Endpoint

    with session_scope() as session:
        session.execute(update(Endpoint).where(Endpoint.hostname == "WS-3")
                        .values(roaming=True))
    auto = create_auto_jobs(list(world.endpoints.values()), FAST)
    assert len(auto.jobs) == 1
    assert any("roaming" in n for n in auto.notes)
    assert any("EULA not accepted" in n and "Oracle" in n for n in auto.notes)
    with session_scope() as session:
        job = svc.show_job(session, auto.jobs[0], events=False)
    assert job["trigger"] == "scheduled" and job["allow_restart"] is True
    assert job["created_by"] == "policy:Office"
    assert sorted((i["endpoint"], i["patch"]) for i in job["items_detail"]) == [
        ("WS-1", "7zip.7zip@25.01"), ("WS-1", "KB5900110"),
        ("WS-2", "7zip.7zip@25.01"), ("WS-2", "KB5900110")]


def test_cli_bad_input_is_one_line_and_exit_2(world: World, cli) -> None:  # type: ignore[no-untyped-def]
    for args, words in (
        (["jobs", "show", "abc"], "invalid job id"),
        (["jobs", "show", "999"], "no install job 999"),
        (["jobs", "cancel", "999"], "no install job 999"),
        (["jobs", "resume", "999"], "no install job 999"),
        (["install", "select", "KB5900110"], "--all-affected"),
        (["install", "select", "nope", "--all-affected"], "no patch"),
        (["install", "list", "--severity", "Urgent"], "unknown severity"),
        (["install", "start"], "the selection is empty"),
        (["install", "now", "KB5900110", "--endpoints", "NOPE"], "no endpoint named"),
        (["eula", "accept", "KB1"], "no patch"),
    ):
        result = cli(*args)
        assert result.code == 2, (args, result.out, result.err)
        assert words in result.err and result.err.count("\n") == 1, result.err
    assert "no EULA" in cli("eula", "show", "KB5900110").out
    listed = json.loads(cli("install", "list", "--json").out)
    assert [r["patch"] for r in listed][:1] == ["KB5900110"]
    assert cli("jobs", "list", "--json").out.strip() == "[]"
