"""Incremental scans on SQLite and MariaDB, over real MSRC months: after a sync, an inventory
change or a policy change, the endpoints kept are exactly those nothing changed for, and the
results equal a full scan's, row for row (missing pairs with their reasons, states, messages)."""

from __future__ import annotations

import datetime as dt
import json
import random
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from models import CatalogState, Endpoint, MissingPatch, Patch
from models.base import utcnow
from models.db import session_scope
from patchflow.sample_catalog import PACKAGES, WINGET_DIR
from tests.conftest import shared_fixtures

pytestmark = pytest.mark.usefixtures("prefect")

# (os name, display version, build, UBR range) of 2024 releases, so November and December
# 2024's cumulative updates apply; Windows 7 has no 2024 rows at all (kept as "unmapped").
OSES = [
    ("Windows 11 Pro", "23H2", 22631, (4300, 4700)),
    ("Windows 10 Enterprise", "22H2", 19045, (5000, 5300)),
    ("Windows Server 2022 Datacenter", "21H2", 20348, (2700, 3000)),
    ("Windows Server 2012 R2 Standard", None, 9600, (21000, 22400)),
    ("Windows 7 Enterprise", None, 7601, (26000, 27000)),
]
APPS = [("Mozilla Firefox (x64 en-US)", "Mozilla", ["100.0", "145.0"]),
        ("7-Zip 24.08 (x64)", "Igor Pavlov", ["24.08"]),
        ("VLC media player", "VideoLAN", ["3.0.10", "3.0.21"])]


def _fleet(count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    docs = []
    for n in range(count):
        name, version, build, (lo, hi) = OSES[n % len(OSES)]
        programs = [{"name": f"Contoso Tool {rng.randint(1, 40)}", "version": "1.0",
                     "publisher": "Contoso", "product_code": None, "upgrade_code": None,
                     "arch": "x64", "scope": "machine", "install_date": None}]
        for app, publisher, versions in APPS:
            if rng.random() < 0.5:
                programs.append({"name": app, "version": rng.choice(versions),
                                 "publisher": publisher, "product_code": None,
                                 "upgrade_code": None, "arch": "x64", "scope": "machine",
                                 "install_date": None})
        docs.append({
            "schema_version": 1, "hostname": f"HOST-{n:03d}", "domain": "corp.example",
            "os": {"name": name, "display_version": version, "build": build,
                   "ubr": rng.randint(lo, hi), "arch": "x64", "language": "en-US",
                   "hotpatch": False,
                   "installation_type": "Server" if "Server" in name else "Client"},
            "programs": programs, "updates": [], "pending_reboot": False,
            "collected_at": "2024-12-20T10:00:00Z"})
    return docs


def _results() -> tuple[list[tuple], list[tuple]]:
    """Every missing row and every endpoint's scan outcome, in a fixed order."""
    with session_scope() as session:
        missing = [tuple(r) for r in session.execute(
            select(MissingPatch.endpoint_id, MissingPatch.patch_id, MissingPatch.product,
                   MissingPatch.installed_version, MissingPatch.available_version,
                   MissingPatch.reason)
            .order_by(MissingPatch.endpoint_id, MissingPatch.patch_id))]
        states = [tuple(r) for r in session.execute(
            select(Endpoint.id, Endpoint.scan_state, Endpoint.scan_message)
            .order_by(Endpoint.id))]
    return missing, states


def _detected() -> dict[tuple[int, int], dt.datetime]:
    """When each missing pair was first found (what the console shows as "detected")."""
    with session_scope() as session:
        return {(e, p): at for e, p, at in session.execute(
            select(MissingPatch.endpoint_id, MissingPatch.patch_id, MissingPatch.detected_at))}


def _scan(cli, *args: str) -> dict:
    r = cli("scan", "--all", "--json", *args)
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["status"] == "completed"
    return summary


def _incremental_equals_full(cli) -> dict:
    """An incremental scan, then a full one: the same rows; returns the incremental summary."""
    summary = _scan(cli)
    after_incremental = _results()
    full = _scan(cli, "--full")
    assert full["unchanged"] == 0
    assert _results() == after_incremental
    for key in ("scanned", "missing_endpoints", "up_to_date", "failed", "pairs"):
        assert summary[key] == full[key], key
    return summary


def test_rescans_only_what_changed_and_equals_a_full_scan(cli, home: Path,
                                                          tmp_path: Path) -> None:
    msrc = tmp_path / "msrc"
    msrc.mkdir()
    source = shared_fixtures("msrc")
    shutil.copy(source / "2024-Nov.xml.gz", msrc)
    assert cli("init").code == 0
    r = cli("server", "add", "local", "--host", "h", "--msrc-source", str(msrc),
            "--winget-source", str(WINGET_DIR), "--winget-packages", ",".join(PACKAGES))
    assert r.code == 0, r.err
    assert cli("sync", "local").code == 0
    fleet = _fleet(40)
    (tmp_path / "fleet.json").write_text(json.dumps(fleet))
    assert cli("endpoints", "import", str(tmp_path / "fleet.json")).code == 0

    # The import scanned every endpoint (inventory hook) and recorded its basis: nothing
    # changed since, so an incremental scan keeps all 40, and agrees with a full scan.
    detected = _detected()
    first = _incremental_equals_full(cli)
    assert first["unchanged"] == 40 and first["scanned"] == 40
    missing, _ = _results()
    assert missing, "the fleet must miss some patches for the comparison to mean anything"
    # A pair still missing keeps the time it was first found, through a full rescan.
    assert _detected() == detected

    # A new month changes the products it has rows for: their endpoints are rescanned; the
    # Windows 7 ones (no 2024 rows in either month) keep their results.
    shutil.copy(source / "2024-Dec.xml.gz", msrc)  # a later month: a new sync
    assert cli("sync", "local").code == 0
    before = utcnow().replace(microsecond=0)  # MariaDB's DATETIME keeps whole seconds
    month = _incremental_equals_full(cli)
    now_detected = _detected()
    kept = now_detected.keys() & detected.keys()
    assert kept and all(now_detected[pair] == detected[pair] for pair in kept)
    new_pairs = now_detected.keys() - detected.keys()
    assert new_pairs and all(now_detected[pair] >= before for pair in new_pairs)
    assert max(detected.values()) <= before
    windows7 = sum(1 for d in fleet if d["os"]["name"].startswith("Windows 7"))
    assert month["unchanged"] >= windows7 > 0
    assert month["unchanged"] < 40
    assert _results()[0] != missing  # December's updates replaced November's

    # Endpoints moved under a policy with another patch server (winget only) are rescanned
    # against it; nobody else is.
    (tmp_path / "no-msrc").mkdir()
    r = cli("server", "add", "apps", "--host", "h2", "--msrc-source", str(tmp_path / "no-msrc"),
            "--winget-source", str(WINGET_DIR), "--winget-packages", ",".join(PACKAGES))
    assert r.code == 0, r.err
    r = cli("sync", "apps")
    assert r.code == 0, r.out
    assert cli("groups", "add", "lab").code == 0
    assert cli("policies", "add", "lab", "--patch-server", "apps", "--groups", "lab").code == 0
    for host in ("HOST-001", "HOST-002", "HOST-003"):
        assert cli("endpoints", "move", host, "--group", "lab").code == 0
    moved = _incremental_equals_full(cli)
    assert moved["unchanged"] == 37
    with session_scope() as session:
        lab = set(session.scalars(
            select(MissingPatch.patch_id).join(Endpoint, Endpoint.id == MissingPatch.endpoint_id)
            .where(Endpoint.hostname.in_(["HOST-001", "HOST-002", "HOST-003"]))))
        kbs = set(session.scalars(select(Patch.kb).where(Patch.id.in_(lab))))
    assert lab and kbs == {None}  # third-party patches only: no Microsoft patch on "apps"

    # One endpoint's inventory changes (stored without the import's own rescan, as a queued
    # agent upload would be): only it is rescanned, and its new program is found.
    from patchflow.fleet.inventories import store_inventory
    from patchflow.fleet.inventory import Inventory

    doc = dict(fleet[0], programs=[{
        "name": "VLC media player", "version": "3.0.10", "publisher": "VideoLAN",
        "product_code": None, "upgrade_code": None, "arch": "x64", "scope": "machine",
        "install_date": None}])
    with session_scope() as session:
        store_inventory(session, Inventory.model_validate(doc))
    one = _incremental_equals_full(cli)
    assert one["unchanged"] == 39
    with session_scope() as session:
        first_id = session.scalar(select(Endpoint.id).where(Endpoint.hostname == "HOST-000"))
    assert any(row[0] == first_id and row[3] == "3.0.10" for row in _results()[0])

    # Three catalogs were scanned against (November; December; with the second server): the
    # oldest, which no endpoint refers to any more, was dropped when the newest was stored.
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(CatalogState)) == 2
