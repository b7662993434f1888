"""The scan flow against the synced sample catalog, on SQLite and MariaDB: batches, results
replaced per endpoint, scan states, the inventory fast path and `missing --explain`."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from patchflow.sample_catalog import MSRC_DIR, PACKAGES, WINGET_DIR

pytestmark = pytest.mark.usefixtures("prefect")


def _inventory(host: str, os_name: str, version: str, build: int, ubr: int, kbs: list[str],
               programs: list[dict], installation_type: str = "Client") -> dict:
    return {
        "schema_version": 1, "hostname": host, "domain": "corp.example",
        "os": {"name": os_name, "display_version": version, "build": build, "ubr": ubr,
               "arch": "x64", "language": "en-US", "hotpatch": False,
               "installation_type": installation_type},
        "programs": programs,
        "updates": [{"kb": kb, "installed_on": "2026-09-10"} for kb in kbs],
        "pending_reboot": False, "collected_at": "2026-11-29T10:00:00Z",
    }


def _program(name: str, version: str, publisher: str, arch: str = "x64") -> dict:
    return {"name": name, "version": version, "publisher": publisher, "product_code": None,
            "upgrade_code": None, "arch": arch, "scope": "machine", "install_date": None}


FLEET = [
    # Behind: an old cumulative installed, 7-Zip one version behind.
    _inventory("WS-01", "Windows 11 Pro", "23H2", 22631, 5800, ["KB5890010"],
               [_program("7-Zip 24.08 (x64)", "24.08", "Igor Pavlov")]),
    # Current: the newest cumulative and the servicing stack update, current apps.
    _inventory("WS-02", "Windows 11 Pro", "23H2", 22631, 6000, ["KB5900110", "5900150"],
               [_program("7-Zip 25.01 (x64)", "25.01", "Igor Pavlov"),
                _program("Mozilla Firefox (x64 en-US)", "145.0", "Mozilla")]),
    # September's update installed: only October's is missing, not both.
    _inventory("WS-03", "Windows 11 Enterprise", "23H2", 22631, 5900, ["kb5900010", "KB5900150"],
               []),
    _inventory("SRV-01", "Windows Server 2022 Datacenter", None, 20348, 4000, [], [],
               installation_type="Server Core"),
]


def _prepare(cli, tmp_path: Path) -> None:
    assert cli("init").code == 0
    r = cli("server", "add", "local", "--host", "h", "--msrc-source", str(MSRC_DIR),
            "--winget-source", str(WINGET_DIR), "--winget-packages", ",".join(PACKAGES))
    assert r.code == 0, r.err
    assert cli("sync", "local").code == 0
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(FLEET))
    r = cli("endpoints", "import", str(path))
    assert r.code == 0, r.err


def _missing(cli, *args: str) -> dict[str, set[str]]:
    r = cli("missing", "--json", *args)
    assert r.code == 0, r.err
    found: dict[str, set[str]] = {}
    for row in json.loads(r.out):
        found.setdefault(row["endpoint"], set()).add(row["kb"] or row["package_id"])
    return found


def test_scan_reports_newest_fix_once_and_sets_states(cli, home: Path, tmp_path: Path) -> None:
    _prepare(cli, tmp_path)
    r = cli("scan", "--all", "--json")
    assert r.code == 0, r.err
    summary = json.loads(r.out)
    assert summary["status"] == "completed" and summary["scanned"] == 4
    found = _missing(cli)
    assert found["WS-01"] == {"KB5900110", "KB5900150", "7zip.7zip"}
    assert "WS-02" not in found
    assert found["WS-03"] == {"KB5900110"}
    assert found["SRV-01"] == {"KB5900140"}
    rows = json.loads(cli("missing", "--json", "--endpoint", "SRV-01").out)
    assert rows[0]["product"] == "Windows Server 2022 (Server Core installation)"
    assert "4000" in rows[0]["reason"] and "4200" in rows[0]["reason"]
    app = next(r for r in json.loads(cli("missing", "--json", "--endpoint", "WS-01").out)
               if r["package_id"] == "7zip.7zip")
    assert app["installed_version"] == "24.08" and app["available_version"] == "25.01"
    states = {e["hostname"]: e["scan_state"]
              for e in json.loads(cli("endpoints", "list", "--json").out)}
    assert states == {"WS-01": "Missing Patches", "WS-02": "Up-to-Date",
                      "WS-03": "Missing Patches", "SRV-01": "Missing Patches"}
    severities = {r["kb"]: r["severity"] for r in json.loads(cli("missing", "--json").out)
                  if r["kb"]}
    assert severities["KB5900140"] == "Important"
    only_critical = _missing(cli, "--severity", "Critical")
    assert only_critical == {"WS-01": {"KB5900110"}, "WS-03": {"KB5900110"}}
    assert cli("missing", "--severity", "Urgent").code == 2

    lines = cli("missing", "--explain", "WS-03", "KB5900110").out
    assert "KB5900110" in lines and "22631" in lines
    explained_old = cli("missing", "--explain", "WS-01", "KB5900010").out
    assert "supersed" in explained_old.lower()


def test_new_inventory_rescans_that_endpoint(cli, home: Path, tmp_path: Path) -> None:
    _prepare(cli, tmp_path)
    assert cli("scan", "--endpoints", "WS-01").code == 0
    assert _missing(cli)["WS-01"] == {"KB5900110", "KB5900150", "7zip.7zip"}
    updated = dict(FLEET[0])
    updated["os"] = dict(updated["os"], ubr=6000)
    updated["updates"] = [{"kb": "KB5900110", "installed_on": "2026-10-15"}]
    path = tmp_path / "ws01.json"
    path.write_text(json.dumps(updated))
    from patchflow.scanning.service import register_inventory_hook

    register_inventory_hook()
    assert cli("endpoints", "import", str(path)).code == 0
    assert _missing(cli)["WS-01"] == {"KB5900150", "7zip.7zip"}


def test_scan_bad_selection(cli, home: Path, tmp_path: Path) -> None:
    _prepare(cli, tmp_path)
    r = cli("scan", "--endpoints", "NOPE")
    assert r.code == 2 and "unknown endpoint" in r.err
    assert cli("scan", "--group", "nogroup").code == 2
    assert cli("scan", "--stop").code == 2  # nothing running


def _most_at_once(monkeypatch: pytest.MonkeyPatch, module: object, name: str,
                  pause: float) -> list[int]:
    """[the most calls of `module.name` seen running at once]; each call still does its work,
    after `pause` seconds, so that two threads running it would be seen together."""
    real, lock, state = getattr(module, name), threading.Lock(), {"now": 0}
    most = [0]

    def counted(*args: object, **kwargs: object) -> object:
        with lock:
            state["now"] += 1
            most[0] = max(most[0], state["now"])
        try:
            time.sleep(pause)
            return real(*args, **kwargs)
        finally:
            with lock:
                state["now"] -= 1

    monkeypatch.setattr(module, name, counted)
    return most


def test_default_runner_overlaps_batches_on_mariadb_only(
    cli, home: Path, tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches at once on MariaDB, where a batch's write is mostly the database server's
    time; one at a time on SQLite. Either way one batch reads and evaluates at a time, and the
    results are the ones each test above expects."""
    from flows.scan import scan
    from patchflow.scanning import scan_store, service

    _prepare(cli, tmp_path)
    batches = _most_at_once(monkeypatch, service, "scan_batch", 0.5)
    reads = _most_at_once(monkeypatch, scan_store, "load_inventory", 0.2)
    evaluations = _most_at_once(monkeypatch, service, "run_engine", 0.2)
    summary = scan({"all": True}, batch_size=1, full=True)
    assert summary["status"] == "completed" and summary["scanned"] == 4
    assert batches == [2 if db_url.startswith("mysql") else 1]
    assert reads == [1] and evaluations == [1]
    found = _missing(cli)
    assert found["WS-01"] == {"KB5900110", "KB5900150", "7zip.7zip"}
    assert "WS-02" not in found and found["SRV-01"] == {"KB5900140"}
