"""The install rules without a database: which installer an endpoint gets, what exit codes
mean, the Windows command lines, the agent's download-verify-install order, and what the
simulated platform does to its inventory."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.install import HashMismatch, InstallSpec, JobExecutor, interpret
from agent.platforms.base import JobNotSupported
from agent.platforms.simulated import SimulatedPlatform, apply_install, exit_code_for
from agent.platforms.windows import WindowsPlatform
from agent.platforms.windows.installers import install_command, split_switches, wua_command
from agent.platforms.windows.readers import DictRegistry
from agent.state import StateDir
from patchflow.install import states as st
from patchflow.install.installers import WUA, choose, file_name_of, program_arch
from tests.fixtures.agent.harness import base_inventory
from tests.support.httpserver import serve_files


@dataclass
class Row:
    url: str
    sha256: str
    type: str
    arch: str
    scope: str | None = None
    locale: str | None = None
    silent_switches: str | None = None
    id: int | None = None  # the catalog row's id (PatchInstaller.id)


FIREFOX = [Row("https://x.invalid/Firefox%20Setup%20145.0%20en-US%20x64.exe", "A" * 64, "exe",
               "x64", locale="en-US", silent_switches="/S"),
           Row("https://x.invalid/Firefox%20Setup%20145.0%20de%20x64.exe", "B" * 64, "exe",
               "x64", locale="de", silent_switches="/S")]
SEVENZIP = [Row("https://x.invalid/7z2501-x64.exe", "c" * 64, "nullsoft", "x64"),
            Row("https://x.invalid/7z2501.exe", "d" * 64, "nullsoft", "x86")]


def test_installer_follows_the_programs_architecture_then_language() -> None:
    got, _ = choose(SEVENZIP, is_microsoft=False, os_arch="x64", language="en-US",
                    reason="7-Zip 24.08 (x86) < 25.01")
    assert got is not None and got.url.endswith("7z2501.exe")  # 32-bit 7-Zip on x64 Windows
    got, _ = choose(SEVENZIP, is_microsoft=False, os_arch="x64", language=None, reason=None)
    assert got is not None and got.url.endswith("-x64.exe") and got.sha256 == "c" * 64
    german, _ = choose(FIREFOX, is_microsoft=False, os_arch="x64", language="de-DE")
    assert german is not None and german.sha256 == "b" * 64 and german.switches == "/S"
    other, _ = choose(FIREFOX, is_microsoft=False, os_arch="x64", language="fr-FR")
    assert other is not None and other.sha256 == "a" * 64
    assert german.file_name == "Firefox Setup 145.0 de x64.exe"
    none, why = choose(SEVENZIP[:1], is_microsoft=False, os_arch="arm64", language=None)
    assert none is None and "no arm64 installer" in str(why) and "x64" in str(why)


def test_a_kb_without_a_file_goes_through_windows_update() -> None:
    got, _ = choose([], is_microsoft=True, os_arch="x64", language="en-US")
    assert got is not None and got.type == WUA and got.url is None
    msu = [Row("https://x.invalid/windows11.0-kb5900110-x64.msu", "e" * 64, "msu", "x64")]
    got, _ = choose(msu, is_microsoft=True, os_arch="x64", language=None)
    assert got is not None and got.type == "msu"
    assert program_arch("Firefox 140.0 (x64) < 145.0; Firefox 139 (x86) < 145.0") is None
    assert file_name_of("https://h/dir/a%20b.msi?x=1") == "a b.msi"


def test_exit_codes_and_the_restart_decision() -> None:
    assert interpret(0, False)[0] == "succeeded"
    state, message, restart = interpret(3010, False)
    assert state == "reboot pending" and not restart and "3010" in message
    state, message, restart = interpret(1641, True)
    assert state == "succeeded" and restart and "restarting" in message
    assert interpret(1618, False)[0] == "failed"
    assert interpret(1603, False, "boom")[1] == "installer failed with exit code 1603: boom"
    assert st.outcome_of(3010) == st.REBOOT_PENDING and st.outcome_of(5) == st.FAILED
    assert st.is_retryable(1602) and st.is_retryable(1618) and not st.is_retryable(1603)
    assert st.describe_exit(1618).startswith("exit code 1618 (another installation")
    assert st.may_override(st.FAILED, "no result from agent within 5 s of dispatch")
    assert st.may_override(st.CANCELLED, "cancelled by bob")
    assert not st.may_override(st.SUCCEEDED, None)


def test_windows_silent_command_lines() -> None:
    f = Path("C:/dl/setup.exe")
    assert install_command("msi", f) == ["msiexec.exe", "/i", str(f), "/qn", "/norestart"]
    assert install_command("wix", f)[:2] == ["msiexec.exe", "/i"]
    assert install_command("nullsoft", f) == [str(f), "/S"]
    assert install_command("inno", f) == [str(f), "/VERYSILENT", "/NORESTART"]
    assert install_command("msu", f) == ["wusa.exe", str(f), "/quiet", "/norestart"]
    assert install_command("burn", f) == [str(f), "/quiet", "/norestart"]
    assert install_command("exe", f, '/s INSTALLDIR="C:\\Program Files\\Java"') == [
        str(f), "/s", "INSTALLDIR=C:\\Program Files\\Java"]
    assert split_switches("  ") == []
    with pytest.raises(JobNotSupported, match="no silent switches"):
        install_command("exe", f, None)
    with pytest.raises(JobNotSupported, match="not supported"):
        install_command("zip", f)
    args = wua_command("KB5900110")
    script = base64.b64decode(args[-1]).decode("utf-16-le")
    assert args[0] == "powershell.exe" and "'5900110'" in script and "exit 3010" in script
    with pytest.raises(JobNotSupported):
        wua_command("KB59; rm -rf")


class Recorder:
    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.calls: list[list[str]] = []

    def call(self, args: Any, timeout: float) -> tuple[int, str]:
        self.calls.append(list(args))
        return self.code, ""


def test_windows_platform_runs_through_the_process_seam() -> None:
    recorder = Recorder(3010)
    platform = WindowsPlatform(DictRegistry({}), processes=recorder)
    job = {"installer": {"type": "wua"}, "patch": {"kb": "KB5900110"}}
    assert platform.install(job, None) == (3010, "")
    platform.restart()
    assert recorder.calls[0][0] == "powershell.exe"
    assert recorder.calls[1][:2] == ["shutdown.exe", "/r"]


def _job(tmp_content: bytes, url: str, **extra: Any) -> dict[str, Any]:
    return {"id": 5, "attempt": 1, "allow_restart": False,
            "patch": {"package_id": "7zip.7zip", "version": "25.01", "package_name": "7-Zip",
                      "title": "7-Zip 25.01", "vendor": "Igor Pavlov"},
            "installer": {"type": "nullsoft", "url": url, "arch": "x64",
                          "sha256": hashlib.sha256(tmp_content).hexdigest(),
                          "file_name": "7z2501-x64.exe", "display_names": ["7-Zip 25.01 (x64)"]},
            # What the server adds (patchflow/install/upgrades.py): the entry it upgrades.
            "program": {"name": "7-Zip 25.01 (x64)", "replaces": {
                "name": "7-Zip 24.08 (x64)", "version": "24.08", "arch": "x64",
                "product_code": None, "upgrade_code": None}},
            **extra}


def _platform(tmp_path: Path, simulate: dict[str, Any] | None = None) -> SimulatedPlatform:
    doc = base_inventory("WS-SIM", 0)
    doc["programs"] = [{"name": "7-Zip 24.08 (x64)", "version": "24.08", "publisher": "Igor",
                        "arch": "x64"},
                       {"name": "7-Zip 24.08", "version": "24.08", "publisher": "Igor",
                        "arch": "x86"}]
    if simulate:
        doc["simulate"] = simulate
    path = tmp_path / "inv.json"
    path.write_text(json.dumps(doc))
    return SimulatedPlatform(path)


def test_vendor_download_is_verified_before_anything_runs(tmp_path: Path) -> None:
    """A roaming endpoint fetches from the vendor: a file whose hash differs is deleted and the
    installer never starts; the right file installs and updates the simulated inventory."""
    good = b"the real installer"
    platform = _platform(tmp_path)
    executor = JobExecutor(None, StateDir(tmp_path / "state"), platform)  # type: ignore[arg-type]
    with serve_files() as vendor:
        vendor.files["/7z2501-x64.exe"] = b"tampered installer"
        bad = executor.run(_job(good, f"{vendor.url}/7z2501-x64.exe"))
        assert bad["state"] == "failed" and "does not match" in bad["message"]
        assert bad["exit_code"] is None
        assert "ran" not in platform.load_inventory().get("simulate", {})
        assert not list((tmp_path / "state" / "downloads").rglob("*.exe*"))
        vendor.files["/7z2501-x64.exe"] = good
        ok = executor.run(_job(good, f"{vendor.url}/7z2501-x64.exe"))
    assert ok["state"] == "succeeded" and ok["exit_code"] == 0
    assert ok["details"]["attempt"] == 1 and len(ok["details"]["result_id"]) == 32
    doc = platform.collect_inventory()
    assert "simulate" not in doc
    versions = {(p["name"], p["arch"]): p["version"] for p in doc["programs"]}
    assert versions == {("7-Zip 25.01 (x64)", "x64"): "25.01", ("7-Zip 24.08", "x86"): "24.08"}
    with serve_files() as vendor:  # unreachable vendor: retryable, still nothing ran
        down = executor.run(_job(good, f"{vendor.url}/gone.exe"))
    assert down["state"] == "failed" and down["details"]["retryable"]
    assert len(platform.load_inventory()["simulate"]["ran"]) == 1


def test_malformed_jobs_are_refused_not_run(tmp_path: Path) -> None:
    executor = JobExecutor(None, StateDir(tmp_path / "s"), _platform(tmp_path))  # type: ignore[arg-type]
    out = executor.run({"id": 7, "kind": "install"})
    assert out["state"] == "failed" and "does not run install jobs" in out["message"]
    with pytest.raises(Exception, match="needs a URL"):
        InstallSpec.parse({"id": 1, "installer": {"type": "msi", "url": "/x", "sha256": "zz"}})
    with pytest.raises(HashMismatch):
        raise HashMismatch("x")


def test_simulated_platform_scripts_failures_reboots_and_retries(tmp_path: Path) -> None:
    platform = _platform(tmp_path, {"exit_codes": {"7zip.7zip": [1618, 3010],
                                                   "KB5900110": 1603}})
    job = _job(b"x", "/content/sha256/x")
    assert platform.install(job, None) == (1618, "simulated installer failure")
    assert platform.load_inventory()["programs"][0]["version"] == "24.08"
    assert platform.install({**job, "attempt": 2}, None)[0] == 3010
    doc = platform.load_inventory()
    assert doc["pending_reboot"] is True and doc["programs"][0]["version"] == "25.01"
    platform.restart()
    doc = platform.load_inventory()
    assert doc["pending_reboot"] is False and doc["simulate"]["restarts"] == 1
    kb = {"patch": {"kb": "KB5900110"}, "installer": {"type": "wua"}}
    assert exit_code_for({"kb5900110": 1603}, kb) == 1603
    new: dict[str, Any] = {"programs": [], "updates": []}
    apply_install(new, {"patch": {"kb": "KB5900110"}})
    apply_install(new, {"patch": {"package_id": "PuTTY.PuTTY", "version": "0.83.0.0",
                                  "package_name": "PuTTY"},
                        "installer": {"arch": "x64", "product_code": "{P}",
                                      "display_names": ["PuTTY release 0.83 (64-bit)"]}})
    assert new["updates"][0]["kb"] == "KB5900110"
    assert new["programs"][0]["name"] == "PuTTY release 0.83 (64-bit)"
    assert new["programs"][0]["product_code"] == "{P}"
