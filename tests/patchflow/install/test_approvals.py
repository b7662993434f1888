"""Approvals and declines on SQLite and MariaDB through the CLI: who/when/why is recorded, bad
input is one line and exit 2, and a declined patch disappears from `missing`, the install list,
the selection, the dashboard and automatic install, until undeclined."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from models import AuditEvent, InstallSelection, MissingPatch, Patch
from models.db import session_scope
from patchflow.install.auto import create_auto_jobs
from patchflow.install.settings import InstallSettings
from patchflow.reporting.report_data import load_dashboard
from tests.fixtures.install.world import World, build

ZIP = "7zip.7zip@25.01"
JAVA = "Oracle.JavaRuntimeEnvironment@8.0.4510.9"


@pytest.fixture
def world(home: Path) -> World:
    with session_scope() as session:
        built = build(session)
        # Java's pairs carry versions, as a real scan writes them (the vulnerability rating
        # of `missing` reads them).
        session.execute(update(MissingPatch).where(MissingPatch.installed_version.is_(None))
                        .values(installed_version="1.0", available_version="2.0"))
        return built


def _json(result: Any) -> Any:
    assert result.code == 0, result.err
    return json.loads(result.out)


def _missing_keys(cli: Any, *extra: str) -> set[str]:
    return {r["kb"] or r["package_id"] for r in _json(cli("missing", "--json", *extra))}


def test_approve_records_who_when_why_and_checks_input(world: World, cli: Any) -> None:
    deadline = (dt.date.today() + dt.timedelta(days=7)).isoformat()
    out = _json(cli("approve", "KB5900110", "--groups", "Office", "--deadline", deadline,
                    "--json"))
    assert out == {"patch": "KB5900110", "patch_id": world.patches["kb"], "groups": ["Office"],
                   "deadline": deadline}
    assert cli("approve", ZIP, "--groups", "Office").code == 0
    rows = _json(cli("approvals", "list", "--group", "Office", "--json"))
    assert {r["patch"] for r in rows} == {"KB5900110", ZIP}
    kb = next(r for r in rows if r["patch"] == "KB5900110")
    assert kb["deadline"] == deadline and kb["by"].startswith("cli:")
    assert kb["why"].startswith(f"approved by {kb['by']} on ")
    with session_scope() as session:
        assert session.scalar(select(AuditEvent.target).where(
            AuditEvent.action == "patch.approve").limit(1)) == "KB5900110"
    for args, message in (
        (["approve", "KB5900110", "--groups", "Nope"], "no group named 'Nope'"),
        (["approve", "KB404", "--groups", "Office"], "no patch"),
        (["approve", "KB5900110", "--groups", "Office", "--deadline", "soon"],
         "invalid --deadline"),
        (["approve", "KB5900110", "--groups", "Office", "--deadline", "2001-01-01"],
         "in the past"),
        (["approve", "KB5900110", "--groups", " , "], "names no group"),
        (["decline"], "give a PATCH or --superseded"),
        (["undecline", "KB5900110"], "is not declined"),
    ):
        result = cli(*args)
        assert result.code == 2 and message in result.err, (args, result.err)
        assert "Traceback" not in result.err
    assert cli("unapprove", "KB5900110", "--groups", "Office").code == 0
    assert [r["patch"] for r in _json(cli("approvals", "list", "--json"))] == [ZIP]


def test_declined_patch_is_not_offered_nor_counted(world: World, cli: Any) -> None:
    assert cli("install", "select", ZIP, "--all-affected").code == 0
    before = load_dashboard_now()
    assert before["missing_by_severity"]["Unspecified"]["pairs"] == 6  # 7-Zip and Java, 3 each
    assert cli("decline", ZIP, "--reason", "we standardise on another archiver").code == 0
    assert ZIP.split("@")[0] not in _missing_keys(cli)
    assert {r["patch"] for r in _json(cli("install", "list", "--json"))} == {"KB5900110", JAVA}
    with session_scope() as session:  # the selection lost it too
        assert session.scalar(select(InstallSelection.patch_id).limit(1)) is None
    result = cli("install", "select", ZIP, "--all-affected")
    assert result.code == 2 and "is declined" in result.err
    assert cli("approve", ZIP, "--groups", "Office").code == 2
    rows = _json(cli("missing", "--json", "--include-declined"))
    declined = {r["package_id"] for r in rows if r["declined"]}
    assert declined == {"7zip.7zip"} and len(rows) == 9
    after = load_dashboard_now()
    assert after["missing_by_severity"]["Unspecified"]["pairs"] == 3
    from patchflow.reporting.service import load_frames  # what every report is built from
    from patchflow.scanning.missing_query import MissingFilters

    frames = load_frames(MissingFilters(), ["missing", "compliance"])
    assert frames.missing is not None and "7zip.7zip" not in set(frames.missing["package_id"])
    listed = _json(cli("approvals", "list", "--json"))
    assert listed[0]["kind"] == "declined" and "another archiver" in listed[0]["why"]
    # Automatic install leaves it out too (Java waits for its EULA, as before).
    assert create_auto_jobs_pairs() == {world.patches["kb"]}
    # Declining twice is harmless; undeclining brings it back everywhere.
    assert _json(cli("decline", ZIP, "--json"))["already"] is True
    assert cli("undecline", ZIP).code == 0
    assert "7zip.7zip" in _missing_keys(cli)
    assert load_dashboard_now()["missing_by_severity"] == before["missing_by_severity"]


def test_endpoint_missing_only_declined_patches_counts_as_up_to_date(world: World,
                                                                     cli: Any) -> None:
    for ref in ("KB5900110", ZIP, JAVA):
        assert cli("decline", ref).code == 0
    overview = load_dashboard_now()["scan_overview"]
    assert overview == {"missing_patches": 0, "not_scanned": 0, "up_to_date": 3}
    assert _missing_keys(cli) == set()


def test_decline_superseded_in_bulk(world: World, cli: Any) -> None:
    with session_scope() as session:
        session.execute(update(Patch).where(Patch.id == world.patches["java"])
                        .values(superseded_by_id=world.patches["kb"]))
    out = _json(cli("decline", "--superseded", "--json"))
    assert out == {"declined": [JAVA], "count": 1}
    rows = _json(cli("approvals", "list", "--json"))
    assert rows[0]["why"].endswith("superseded by KB5900110")
    assert _json(cli("decline", "--superseded", "--json"))["count"] == 0
    assert cli("decline", ZIP, "--superseded").code == 2


def load_dashboard_now() -> dict[str, Any]:
    with session_scope() as session:
        return load_dashboard(session)


def create_auto_jobs_pairs() -> set[int]:
    from models import InstallJobItem

    jobs = create_auto_jobs(_endpoint_ids(), InstallSettings(max_attempts=1))
    with session_scope() as session:
        return set(session.scalars(select(InstallJobItem.patch_id)
                                   .where(InstallJobItem.job_id.in_(jobs.jobs))))


def _endpoint_ids() -> list[int]:
    from models import Endpoint

    with session_scope() as session:
        return list(session.scalars(select(Endpoint.id)))


def test_no_route_to_a_job_installs_a_declined_patch(world: World, cli: Any) -> None:
    """The console's ticked-patches and per-endpoint installs build jobs straight from pairs:
    the refusal sits in the job itself, so they cannot install a declined patch either."""
    from models import InstallJob
    from patchflow.errors import UserError
    from patchflow.install import create_job

    assert cli("decline", ZIP).code == 0
    pairs = [(world.patches[key], world.endpoints["WS-1"]) for key in ("kb", "7zip")]
    with pytest.raises(UserError, match=f"^{re.escape(ZIP)} is declined: it is not offered"), \
            session_scope() as session:
        create_job(session, pairs, "console:alice")
    with session_scope() as session:
        assert session.scalar(select(InstallJob.id).limit(1)) is None
        job = create_job(session, pairs[:1], "console:alice")  # the undeclined one still goes
        assert job.id is not None
