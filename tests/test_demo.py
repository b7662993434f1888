"""`patchflow demo` end to end, as `make demo` runs it: exit 0, no traceback, the expected
install outcome (one failure, one reboot pending), reports written; and safe to run twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _run(home: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATCHFLOW_", "PREFECT_"))}
    env["PATCHFLOW_DEMO_HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "cli.main", "demo"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=240)


def test_demo_runs_the_whole_workflow_twice(tmp_path: Path) -> None:
    home = tmp_path / "demo-home"
    root = Path(__file__).resolve().parents[1]
    for _ in range(2):
        done = _run(home, root)
        output = done.stdout + done.stderr
        assert done.returncode == 0, output[-3000:]
        assert "Traceback" not in output
        assert "1 failed, 1 reboot pending" in output
        assert "sync: Successful" in output
    dashboard = json.loads((home / "reports" / "dashboard.json").read_text())
    overview = dashboard["scan_overview"]
    assert sum(overview.values()) == 25
    reports = list((home / "reports").glob("*/missing.html"))
    assert len(reports) == 1  # the second run started from a fresh home
    assert "WS-0002" in reports[0].read_text(encoding="utf-8")
