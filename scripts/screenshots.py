"""Regenerates the README's console screenshots from the demo's data: runs
`patchflow demo --serve` on a temporary home, logs in with the printed password and takes PNGs
of the dashboard, Patch Install and a patch's endpoints dialog into docs/screenshots/.

    .venv/bin/python scripts/screenshots.py        # needs /usr/bin/chromium and playwright

Nothing here is drawn by hand: run it again after a console change and commit the PNGs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic"]
VIEWPORT = {"width": 1280, "height": 800}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_demo(home: Path) -> tuple[subprocess.Popen[str], str, str]:
    """`patchflow demo --serve`; returns the process, the console URL and the password."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PATCHFLOW_", "PREFECT_"))}
    env["PATCHFLOW_DEMO_HOME"] = str(home)
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "demo", "--serve", "--port",
                             str(_free_port()), "--prefect-port", str(_free_port())],
                            cwd=home.parent, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = ""
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and "Press Ctrl+C" not in out:
        line = proc.stdout.readline()
        if not line:
            break
        out += line
    console = re.search(r"^Console:\s+(\S+)$", out, re.M)
    password = re.search(r"user admin, password (\S+) ", out)
    if console is None or password is None:
        proc.kill()
        raise SystemExit(f"the demo did not come up:\n{out[-2000:]}")
    return proc, console.group(1).removesuffix("/console"), password.group(1)


def take(url: str, password: str) -> list[Path]:
    from playwright.sync_api import expect, sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    shots = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(ignore_https_errors=True, viewport=VIEWPORT)
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto(f"{url}/console/dashboard")
        page.fill("#f-username", "admin")
        page.fill("#f-password", password)
        page.click("button[type=submit]")
        expect(page).to_have_url(re.compile(r"/console/dashboard"))
        page.wait_for_load_state("networkidle")
        shots.append(OUT / "dashboard.png")
        page.screenshot(path=str(shots[-1]), full_page=True)

        page.click("header nav >> text=Patch Install")
        table = page.locator("#missing")
        expect(table.locator("tbody tr").first).to_be_visible()
        shots.append(OUT / "patch-install.png")
        page.screenshot(path=str(shots[-1]), full_page=True)

        table.locator("tr[data-patch^=KB] td a").first.click()
        page.click("#affected-button")
        expect(page.locator("#endpoints-dialog")).to_be_visible()
        shots.append(OUT / "patch-endpoints.png")
        page.screenshot(path=str(shots[-1]), full_page=False)
        browser.close()
    return shots


def main() -> int:
    if not CHROMIUM.exists():
        print(f"error: {CHROMIUM} is not installed (apt-get install chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="patchflow-shots-") as tmp:
        proc, url, password = _start_demo(Path(tmp) / "demo-home")
        try:
            for path in take(url, password):
                print(path.relative_to(ROOT))
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(90)
    return 0


if __name__ == "__main__":
    sys.exit(main())
