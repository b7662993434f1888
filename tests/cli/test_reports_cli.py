"""`patchflow dashboard`: JSON against SQL, the HTML page, and no Prefect in sight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from reports.frames import SEVERITIES
from tests.support.paths import REPO
from tests.support.report_seed import seed_home, sql_rows, sql_scalar

ROOT = REPO


def test_dashboard_json(cli, home: Path, db_url: str) -> None:
    seed_home()
    r = cli("dashboard", "--json")
    assert r.code == 0, r.err
    data = json.loads(r.out)
    assert set(data) == {"generated_at", "endpoints", "missing_by_severity", "scan_overview",
                         "exploited", "overdue_kev"}
    # No vulnerability feed synced in this seed: nothing is known to be exploited.
    assert data["exploited"] == {"patches": 0, "pairs": 0} and data["overdue_kev"] == 0
    assert list(data["missing_by_severity"]) == list(SEVERITIES)
    pairs = dict(sql_rows(db_url, """SELECT p.severity, COUNT(*) FROM missing_patches mp
                                     JOIN patches p ON p.id = mp.patch_id GROUP BY p.severity"""))
    patches = dict(sql_rows(db_url, """SELECT p.severity, COUNT(DISTINCT mp.patch_id)
                                       FROM missing_patches mp JOIN patches p ON p.id = mp.patch_id
                                       GROUP BY p.severity"""))
    for severity, counts in data["missing_by_severity"].items():
        assert counts == {"patches": patches.get(severity, 0), "pairs": pairs.get(severity, 0)}
    over = data["scan_overview"]
    assert over["up_to_date"] == sql_scalar(
        db_url, "SELECT COUNT(*) FROM endpoints WHERE scan_state = 'Up-to-Date'")
    assert over["missing_patches"] == sql_scalar(
        db_url, "SELECT COUNT(*) FROM endpoints WHERE scan_state = 'Missing Patches'")
    assert over["not_scanned"] == sql_scalar(
        db_url, "SELECT COUNT(*) FROM endpoints WHERE scan_state NOT IN "
                "('Up-to-Date', 'Missing Patches')")
    assert sum(over.values()) == data["endpoints"]


def test_dashboard_table_and_html(cli, sqlite_home: Path, tmp_path: Path) -> None:
    seed_home()
    page = tmp_path / "dash.html"
    r = cli("dashboard", "--html", str(page))
    assert r.code == 0, r.err
    assert "Missing patches by severity" in r.out and "Patch scan overview" in r.out
    assert "<svg" in page.read_text(encoding="utf-8")
    r = cli("dashboard", "--html", str(tmp_path / "missing-dir" / "x.html"))
    assert r.code == 2 and r.err.startswith("error: cannot write")


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_dashboard_never_starts_prefect(sqlite_home: Path) -> None:
    """The dashboard must answer without Prefect's ~10 s start. Through the real entry point:
    no Prefect server, flow or report task is loaded. Through this module alone: Prefect is not
    even imported (other command modules are not this test's business)."""
    whole_cli = _run_python(
        "import sys\n"
        "from cli.main import main\n"
        "assert main(['dashboard', '--json']) == 0\n"
        "bad = [m for m in sys.modules if m.startswith(('prefect.server', 'prefect.flows',\n"
        "       'flows.', 'tasks.'))]\n"
        "assert not bad, bad[:5]\n"
    )
    assert whole_cli.returncode == 0, whole_cli.stderr
    assert json.loads(whole_cli.stdout)["endpoints"] == 0
    module_only = _run_python(
        "import sys, typer\n"
        "from patchflow.ops import prefect_env\n"
        "prefect_env.configure()\n"
        "import cli.reports\n"
        "app = typer.Typer()\n"
        "cli.reports.register(app)\n"
        "app(['dashboard', '--json'], standalone_mode=False)\n"
        "loaded = [m for m in sys.modules if m == 'prefect' or m.startswith('prefect.')]\n"
        "assert not loaded, loaded[:5]\n"
    )
    assert module_only.returncode == 0, module_only.stderr


def test_dashboard_needs_an_initialised_database(cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATCHFLOW_HOME", str(tmp_path / "fresh"))
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'fresh' / 'p.db'}")
    r = cli("dashboard", "--json")
    assert r.code == 2 and "not initialised" in r.err
