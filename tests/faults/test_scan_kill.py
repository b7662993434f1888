"""SIGKILL while a scan batch is written (old results deleted, new ones inserted, nothing
committed), then the rerun: the batch is all or nothing, no scan or endpoint is left
"running"/"Scanning", and the rerun's results equal a clean scan's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR
from tests.faults.harness import Commands, query
from tests.flows.test_scan_flow import FLEET

pytestmark = pytest.mark.slow
RESULTS = "SELECT endpoint_id, patch_id, reason, scan_id FROM missing_patches ORDER BY 1, 2"


def _states(db_url: str) -> dict[str, tuple[str, int | None]]:
    return {h: (s, last) for h, s, last in query(
        db_url, "SELECT hostname, scan_state, last_scan_id FROM endpoints")}


def test_scan_killed_mid_batch_write(cli, commands: Commands, db_url: str,
                                     tmp_path: Path) -> None:
    assert cli("init").code == 0
    assert cli("server", "add", "local", "--host", "h", "--msrc-source", str(MSRC_DIR),
               "--winget-source", str(WINGET_DIR), "--winget-packages",
               ",".join(PACKAGES)).code == 0
    assert cli("sync", "local").code == 0
    fleet = tmp_path / "fleet.json"
    fleet.write_text(json.dumps(FLEET))
    assert cli("endpoints", "import", str(fleet)).code == 0  # rescanned: results exist
    clean = _states(db_url)
    before = query(db_url, RESULTS)
    assert before and {s for s, _ in clean.values()} >= {"Missing Patches", "Up-to-Date"}

    commands.killed("scan", "--all", "--full", fault="scan.batch_write")
    # The batch's delete and inserts were rolled back together: every old result is there,
    # written by the earlier scans, none by the killed one.
    assert query(db_url, RESULTS) == before
    [(dead_id, dead_status)] = query(db_url, "SELECT id, status FROM scans WHERE id > :last",
                                     last=max(last for _s, last in clean.values()))
    assert dead_status == "running"

    # The rerun scans one endpoint: the others, left "Scanning" by the dead run, get back the
    # state their intact results imply, and the dead scan is closed with the reason.
    rerun = cli("scan", "--endpoints", "WS-02", "--json")
    assert rerun.code == 0, rerun.err
    summary = json.loads(rerun.out)
    assert summary["status"] == "completed" and summary["scanned"] == 1
    assert [r[:3] for r in query(db_url, RESULTS)] == [r[:3] for r in before]
    assert {h: s for h, (s, _) in _states(db_url).items()} == \
        {h: s for h, (s, _) in clean.items()}
    assert query(db_url, "SELECT id FROM scans WHERE status = 'running'") == []
    [(status, message)] = query(db_url, "SELECT status, message FROM scans WHERE id = :i",
                                i=dead_id)
    assert status == "failed" and "ended without finishing" in message, message
    assert cli("scan", "--stop").code == 2  # "no scan is running": none is
    full = cli("scan", "--all", "--full", "--json")
    assert full.code == 0, full.err
    summary = json.loads(full.out)
    assert summary["status"] == "completed" and summary["scanned"] == len(FLEET)
    after = query(db_url, RESULTS)
    assert [r[:3] for r in after] == [r[:3] for r in before]  # what a clean scan finds
    assert {r[3] for r in after} == {summary["scan_id"]}
