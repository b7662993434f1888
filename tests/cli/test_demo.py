"""`patchflow demo` end to end, as `make demo` runs it on a fresh clone: exit 0, nothing on
stderr (Prefect's home warning once came first), the expected install outcome on the
bundled real data (one failure, one reboot pending), reports written, safe to run twice; and
`demo --serve`, which keeps the console and the Prefect UI up until Ctrl+C."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.paths import REPO
from tests.support.polling import free_port

ROOT = REPO


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATCHFLOW_", "PREFECT_"))}
    env["PATCHFLOW_DEMO_HOME"] = str(home)
    return env


def _run(home: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env=_env(home),
                          capture_output=True, text=True, timeout=240)


def test_a_command_on_a_fresh_clone_prints_no_prefect_warning(tmp_path: Path) -> None:
    """`report` imports Prefect before it finds the database missing; Prefect used to warn
    that it could not create ./.patchflow/prefect (no parents) on the first line."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATCHFLOW_", "PREFECT_"))}
    done = subprocess.run([sys.executable, "-m", "cli.main", "report"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == "error: the patch database is not initialised: run `patchflow init`\n"


def test_the_bundled_data_is_real_and_small() -> None:
    from patchflow.sample_catalog import DEMO_MSRC_DIR, DEMO_WINGET_DIR
    from patchflow.sample_catalog.generate import offline_installers
    from sources.msrc import parse_cvrf

    files = [p for p in (DEMO_MSRC_DIR.parent).rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 3_000_000
    from cli.demo import DEMO_FEEDS
    from patchflow.sample_catalog import DEMO_VULN_DIR

    assert all((DEMO_VULN_DIR / source).exists() for source in DEMO_FEEDS.values())
    months = sorted(p.name for p in DEMO_MSRC_DIR.iterdir())
    assert months == ["2024-Dec.xml.gz", "2024-Nov.xml.gz"]
    dec = parse_cvrf(gzip.decompress((DEMO_MSRC_DIR / "2024-Dec.xml.gz").read_bytes()))
    cu = next(p for p in dec.patches if p.kb == "KB5048685")
    assert cu.severity == "Critical" and cu.supersedes == ("KB5046633",)
    java = (DEMO_WINGET_DIR / "manifests/o/Oracle/JavaRuntimeEnvironment/8.0.4010.10/"
            "Oracle.JavaRuntimeEnvironment.installer.yaml").read_text(encoding="utf-8")
    assert "# published InstallerSha256: E52A8D0337BAE656B01CB76C03975AC3D75AC4984C028BA2A65313" \
           "96DEA6DDDD" in java
    # Only the URL/hash pairs change; a line after them stays as published.
    text = "A: 1\n- InstallerUrl: https://x.test/a.exe\n  InstallerSha256: AB\n  Scope: user\n"
    out = offline_installers(text, "P.Q", "1.0").splitlines()
    assert out[0] == "A: 1" and out[-1] == "  Scope: user"
    assert out[1] == "  # published InstallerUrl: https://x.test/a.exe"
    assert out[2] == "- InstallerUrl: https://downloads.patchflow.invalid/P.Q-1.0-2-a.exe"


def _assert_the_demos_outcome(out: str) -> None:
    assert "sync: Successful" in out
    for feed in ("kev", "mozilla", "nvd"):  # the bundled offline feeds, before the scan
        assert f"vulnerability feed {feed}: Successful" in out
    # December 2024's cumulative updates, real KB numbers, on the simulated clients
    assert re.search(r"KB5048685 ×\d+, KB5048667 ×\d+, KB5048652 ×\d+", out)
    assert "26 succeeded, 1 failed, 1 reboot pending" in out


def test_demo_runs_the_whole_workflow_twice_then_serves_it_until_ctrl_c(tmp_path: Path) -> None:
    """`make demo`, then `make demo-serve` on the same machine: the second run starts from a
    fresh home, and keeps the console and the Prefect UI up until Ctrl+C. One test, as each
    run of the demo costs half a minute of the suite."""
    home = tmp_path / "demo-home"
    clone = tmp_path / "clone"  # a fresh checkout: no ./.patchflow yet
    clone.mkdir()
    done = _run(home, clone, "demo")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert done.stderr == ""  # no Prefect home warning, no traceback
    _assert_the_demos_outcome(done.stdout)
    assert "make demo-serve" in done.stdout.splitlines()[-1]

    # The second run has a Prefect API set for the user's real installation (here one that
    # does not answer): the demo keeps its runs to itself, on its own temporary server.
    port, pport = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "demo", "--serve", "--port", str(port),
         "--prefect-port", str(pport)], cwd=clone,
        env={**_env(home), "PREFECT_API_URL": "http://127.0.0.1:9/api"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines: list[str] = []
        deadline = time.monotonic() + 400
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Press Ctrl+C"):
                break
        out = "".join(lines)
        assert "Press Ctrl+C to stop." in out, out[-3000:] + (proc.stderr.read()
                                                                 if proc.poll() else "")
        _assert_the_demos_outcome(out)
        dashboard = json.loads((home / "reports" / "dashboard.json").read_text())
        assert sum(dashboard["scan_overview"].values()) == 25
        assert dashboard["missing_by_severity"]["Critical"]["pairs"] > 0
        # Firefox 100.0 misses fixes of CVEs in CISA's KEV (CVE-2024-9680 among them)
        assert dashboard["exploited"]["pairs"] > 0 and dashboard["overdue_kev"] > 0
        reports = list((home / "reports").glob("*/missing.html"))
        assert len(reports) == 1  # the second run started from a fresh home
        html = reports[0].read_text(encoding="utf-8")
        assert "WS-0002" in html and "KB5058385" in html  # Server 2022, as MSRC published it
        console_url = re.search(r"^Console:\s+(\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
        password = re.search(r"user admin, password (\S+) ", out).group(1)  # type: ignore[union-attr]
        prefect_url = re.search(r"^Prefect UI:\s+(\S+)$", out, re.M).group(1)  # type: ignore[union-attr]
        assert console_url == f"https://localhost:{port}/console"
        assert prefect_url == f"http://127.0.0.1:{pport}"

        tls = ssl.create_default_context(cafile=str(home / "tls" / "server.crt"))
        with httpx.Client(base_url=f"https://localhost:{port}", verify=tls, trust_env=False,
                          timeout=30) as http:
            form = http.get("/console/login")
            assert form.status_code == 200
            token = re.search(r'name="login_token" value="([^"]+)"', form.text).group(1)  # type: ignore[union-attr]
            done = http.post("/console/login", data={"username": "admin", "password": password,
                                                     "login_token": token})
            assert done.status_code in (302, 303), done.text[:500]
            dashboard = http.get("/console/dashboard")
            assert dashboard.status_code == 200 and "Critical" in dashboard.text
        with httpx.Client(base_url=prefect_url, trust_env=False, timeout=30) as prefect:
            assert prefect.get("/").status_code == 200  # the UI
            runs = prefect.post("/api/flow_runs/filter", json={"limit": 50}).json()
            assert len(runs) >= 5  # the demo's sync, scans, install and report
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    rest = proc.stdout.read() if proc.stdout else ""
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, rest + err
    assert "stopped" in rest and err == ""
    time.sleep(1)
    for p in (port, pport):  # both servers gone: nothing listens there any more
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
            sock.bind(("127.0.0.1", p))
    assert not (clone / ".patchflow").exists()  # neither run wrote a home into the checkout
