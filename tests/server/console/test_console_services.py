"""The services behind the console's administrator pages, on SQLite and MariaDB: job outcomes
and retrying failed items, the group tree changes, the audit log (service and `patchflow audit
list`), a patch server used by a policy, online/offline, console backups; and the pure wording
rules (a partly failed sync, CLI flags in web messages, plurals). The pages themselves are
driven in a browser in test_console_admin_browser.py."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from sqlalchemy import select, update

from models import Endpoint, Group, InstallJob, InstallJobItem, MissingPatch, Policy
from models.db import session_scope
from patchflow.catalog import servers as server_svc
from patchflow.errors import NotFoundError, UserError
from patchflow.fleet import endpoint_view, group_admin
from patchflow.install import create_job
from patchflow.install.outcome import job_outcome
from patchflow.install.retry import retry_failed
from patchflow.ops import audit, backup_files
from server.console import wording
from tests.fixtures.install.world import World, build


@pytest.fixture
def world(home: Path) -> World:
    with session_scope() as session:
        return build(session)


# --- pure rules ------------------------------------------------------------------------------


def test_job_outcome_is_what_the_items_came_to() -> None:
    assert job_outcome("done", {"failed": 3}) == "Failed"
    assert job_outcome("done", {"succeeded": 2, "reboot pending": 1}) == "Succeeded"
    assert job_outcome("done", {"succeeded": 1, "failed": 1}) == "Partially succeeded"
    assert job_outcome("done", {"succeeded": 1, "cancelled": 1}) == "Partially succeeded"
    assert job_outcome("running", {"succeeded": 1, "dispatched": 1}) == "Running"
    assert job_outcome("pending", {}) == "Running"
    assert job_outcome("cancelled", {"succeeded": 2}) == "Cancelled"


def test_wording_for_the_browser() -> None:
    partial = {"sync_status": "Failed", "sync_message":
               "3 documents failed (HTTP 503); 6 documents stored (40 patches), 2 unchanged"}
    assert wording.sync_label(partial) == "Partially successful"
    assert wording.sync_detail(partial) == "6 documents stored, 3 failed"
    failed = {"sync_status": "Failed", "sync_message":
              "3 documents failed (HTTP 503); 0 documents stored (0 patches), 0 unchanged"}
    assert wording.sync_label(failed) == "Failed"
    assert wording.sync_label({"sync_status": "Successful", "sync_message": "1 documents "
                               "stored (3 patches), 0 unchanged"}) == "Successful"
    assert wording.sync_label({"starting": True, "sync_status": "Never"}) == "Starting"
    assert wording.for_web("--patch-server is required") == "Patch server is required"
    assert wording.for_web("--since 2026-02-01 is after --until 2026-01-01") == \
        "The start date 2026-02-01 is after the end date 2026-01-01"
    assert wording.for_web("nothing to install: select patches first "
                           "(`patchflow install select`)") == \
        "Nothing to install: select patches first"
    assert wording.for_web("none of the selected pairs is missing any more (per the last "
                           "scans); `patchflow install refresh` clears the selection") == \
        "None of the selected pairs is missing any more (per the last scans)"
    assert wording.plural(1, "item") == "1 item"
    assert wording.plural(3, "item") == "3 items"
    assert wording.plural(2, "policy", "policies") == "2 policies"


def test_presence_against_the_poll_interval() -> None:
    now = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC)
    # Polls are recorded every 5 minutes at most; 60 s polls → offline after 8 minutes.
    assert endpoint_view.presence(now - dt.timedelta(minutes=7), True, now, 60) == "online"
    assert endpoint_view.presence(now - dt.timedelta(minutes=9), True, now, 60) == "offline"
    assert endpoint_view.presence(now - dt.timedelta(minutes=9), True, now, 600) == "online"
    assert endpoint_view.presence(None, True, now, 60) == "never seen"
    assert endpoint_view.presence(now, False, now, 60) == "no agent"


# --- database --------------------------------------------------------------------------------


def _finish(job_id: int, states: list[str]) -> None:
    with session_scope() as session:
        ids = session.scalars(select(InstallJobItem.id).where(InstallJobItem.job_id == job_id)
                              .order_by(InstallJobItem.id)).all()
        for item, state in zip(ids, states, strict=True):
            session.execute(update(InstallJobItem).where(InstallJobItem.id == item)
                            .values(state=state))
        session.execute(update(InstallJob).where(InstallJob.id == job_id).values(status="done"))


def test_retry_failed_items_makes_a_new_job(world: World) -> None:
    ws = world.endpoints
    pairs = [(world.patches["kb"], ws["WS-1"]), (world.patches["7zip"], ws["WS-2"]),
             (world.patches["7zip"], ws["WS-3"])]
    with session_scope() as session:
        job = create_job(session, pairs, "alice", allow_restart=True).id
        with pytest.raises(UserError, match="still running"):
            retry_failed(session, job, "alice")
    _finish(job, ["succeeded", "failed", "failed"])
    with session_scope() as session:  # WS-3 was rescanned meanwhile: 7-Zip is not missing
        session.query(MissingPatch).filter_by(endpoint_id=ws["WS-3"],
                                              patch_id=world.patches["7zip"]).delete()
    with session_scope() as session:
        result = retry_failed(session, job, "bob")
        new = session.get(InstallJob, result["job_id"])
        assert new is not None and new.trigger == "retry" and new.allow_restart
        assert result == {"job_id": new.id, "items": 1, "dropped": 1}
        items = session.execute(select(InstallJobItem.patch_id, InstallJobItem.endpoint_id,
                                       InstallJobItem.state)
                                .where(InstallJobItem.job_id == new.id)).tuples().all()
        assert items == [(world.patches["7zip"], ws["WS-2"], "pending")]
    _finish(result["job_id"], ["succeeded"])
    with session_scope() as session, pytest.raises(UserError, match="no failed items"):
        retry_failed(session, result["job_id"], "bob")


def test_scans_covering_an_endpoint_follow_its_groups_up(world: World) -> None:
    """An endpoint's page lists the scans whose scope took it in: every endpoint, its name,
    its group or any group above it, its policy; not a name that merely contains its own."""
    from models import Scan
    from patchflow import fleet

    scopes = ["all endpoints", "group Office", "group Berlin", "group Elsewhere",
              "endpoints WS-1,WS-2", "endpoints WS-10", "policy Office", "policy Other"]
    with session_scope() as session:
        fleet.add_group(session, "Berlin", "Office")
        fleet.add_group(session, "Elsewhere")
        group_admin.move_endpoints(session, ["WS-1"], "Berlin")
        for scope in scopes:
            session.add(Scan(trigger="manual", scope=scope, status="done"))
            session.flush()  # ids in this order: the newest scan is listed first
        endpoint = fleet.get_endpoint(session, "WS-1")
        found = [s["scope"] for s in endpoint_view.scans_covering(session, endpoint, "Office")]
    assert found == ["policy Office", "endpoints WS-1,WS-2", "group Berlin", "group Office",
                     "all endpoints"]


def test_group_tree_changes(world: World) -> None:
    from patchflow import fleet

    with session_scope() as session:
        fleet.add_group(session, "Berlin", "Office")
        fleet.add_group(session, "Floor 2", "Berlin")
        with pytest.raises(UserError, match="already exists"):
            group_admin.rename_group(session, "Berlin", "Office")
        with pytest.raises(UserError, match="one of its subgroups"):
            group_admin.set_parent(session, "Office", "Floor 2")
        with pytest.raises(UserError, match="one of its subgroups"):
            group_admin.set_parent(session, "Office", "Office")
        group_admin.rename_group(session, "Berlin", "Berlin HQ")
        moved = group_admin.move_endpoints(session, ["ws-1", "WS-2"], "Floor 2")
        assert moved == ["WS-1", "WS-2"]
        with pytest.raises(NotFoundError):
            group_admin.move_endpoints(session, ["WS-3", "NOPE"], "Floor 2")
        with pytest.raises(UserError, match=r"has subgroups \(Floor 2\)"):
            group_admin.delete_group(session, "Berlin HQ")
        assert group_admin.delete_group(session, "Floor 2") == 2
        parent = session.scalar(select(Group.id).where(Group.name == "Berlin HQ"))
        assert set(session.scalars(select(Endpoint.group_id).where(
            Endpoint.hostname.in_(["WS-1", "WS-2"])))) == {parent}
        group_admin.set_parent(session, "Berlin HQ", None)
        assert [r["path"] for r in fleet.list_groups(session)] == ["Berlin HQ", "Office"]


def test_audit_log_service_and_cli(home: Path, cli) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session:
        audit.record(session, "alice", "login", None, "from 10.0.0.1")
        audit.record(session, "alice", "server.delete", "local")
        audit.record(session, "cli:root", "admin.add", "bob", source="cli")
        with pytest.raises(ValueError):
            audit.record(session, "x", "y", source="email")
    with pytest.raises(UserError), session_scope() as session:  # rolled back: no line
        audit.record(session, "alice", "group.add", "Doomed")
        raise UserError("refused")
    result = cli("audit", "list", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    assert [(r["actor"], r["source"], r["action"], r["target"]) for r in rows] == [
        ("cli:root", "cli", "admin.add", "bob"), ("alice", "console", "server.delete", "local"),
        ("alice", "console", "login", None)]
    result = cli("audit", "list", "--json", "--action", "server.")
    assert [r["action"] for r in json.loads(result.out)] == ["server.delete"]
    result = cli("audit", "list", "--actor", "alice")
    assert result.code == 0 and "server.delete" in result.out and "admin.add" not in result.out


def test_cli_admin_commands_are_audited(home: Path, cli, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
                                        ) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    assert cli("admin", "add", "carol", "--password-stdin").code == 0
    assert cli("admin", "remove", "carol").code == 0
    rows = json.loads(cli("audit", "list", "--json").out)
    assert [(r["action"], r["target"], r["source"]) for r in rows] == [
        ("admin.remove", "carol", "cli"), ("admin.add", "carol", "cli")]
    assert rows[0]["actor"].startswith("cli:")


def test_deleting_a_patch_server_a_policy_uses(world: World, cli) -> None:  # type: ignore[no-untyped-def]
    with session_scope() as session, pytest.raises(UserError, match="used by the policies"):
        server_svc.delete_server(session, "local")
    result = cli("server", "delete", "local", "--yes")
    assert result.code == 2 and "used by the policies Office" in result.err
    with session_scope() as session:
        server_svc.add_server(session, "spare", server_svc.ServerOptions(host="spare"))
    with session_scope() as session:
        assert server_svc.delete_server(session, "local", reassign_to="spare") == ["Office"]
        spare = server_svc.get_server(session, "spare").id
        assert session.scalar(select(Policy.patch_server_id)
                              .where(Policy.name == "Office")) == spare
        server_svc.clear_schedule(session, "spare")
        assert server_svc.server_to_dict(session, server_svc.get_server(
            session, "spare"))["schedule"] is None


def test_console_backups(home: Path, db_url: str) -> None:
    assert backup_files.list_backups() == []
    summary = backup_files.create(db_url)
    name = summary.path.name
    assert [b["name"] for b in backup_files.list_backups()] == [name]
    assert summary.path.stat().st_mode & 0o077 == 0
    for bad in ("../patchflow.db", "x.exp/../../y.exp", "nope.exp", ""):
        with pytest.raises(NotFoundError):
            backup_files.backup_path(bad)
    data = summary.path.read_bytes()
    with pytest.raises(UserError, match="damaged"):
        backup_files.save_upload(data[:-100], "cut.exp")
    with pytest.raises(UserError, match="choose a backup file"):
        backup_files.save_upload(b"", "empty.exp")
    assert len(backup_files.list_backups()) == 1  # refused uploads are not kept
    saved = backup_files.save_upload(data, "../../etc/Our backup.exp")
    assert saved["name"] == "uploaded-Our-backup.exp"
    info = backup_files.describe(saved["name"])
    assert info["manifest"]["rows"] == sum(summary.tables.values())
    with session_scope() as session:
        session.add(Group(name="After the backup"))
    counts = backup_files.restore(db_url, saved["name"])
    assert sum(counts.values()) == sum(summary.tables.values())
    with session_scope() as session:
        assert session.scalar(select(Group.id).where(Group.name == "After the backup")) is None


def test_an_upload_that_cannot_be_stored_is_one_line(home: Path, db_url: str) -> None:
    """A full disk or an unusable folder is an administrator's error to fix, not a crash."""
    data = backup_files.create(db_url).path.read_bytes()
    folder = backup_files.backups_dir()
    moved = folder.with_name("moved-aside")
    folder.rename(moved)
    folder.write_text("a file where the backups folder should be")
    with pytest.raises(UserError, match=r"^cannot store the upload in .*: File exists$"):
        backup_files.save_upload(data, "ok.exp")
    folder.unlink()
    moved.rename(folder)
    assert len(backup_files.list_backups()) == 1  # the failed upload left nothing behind
