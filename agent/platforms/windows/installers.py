"""Silent install commands on Windows, one per installer type, and the process seam that runs
them (the real one uses subprocess; tests record the commands instead of running them).

    msi, wix   msiexec /i FILE /qn /norestart
    nullsoft   FILE /S
    inno       FILE /VERYSILENT /NORESTART
    burn, exe  FILE + the manifest's silent switches (burn defaults to /quiet /norestart)
    msu        wusa FILE /quiet /norestart
    cab        dism /online /add-package /packagepath:FILE /quiet /norestart
    wua        PowerShell driving the Windows Update Agent for one KB (no file)

An exe without known silent switches is refused rather than started: an installer waiting for
clicks on a session-0 desktop never ends.
"""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from agent.platforms.base import JobNotSupported

INSTALL_TIMEOUT = 2 * 3600.0
RESTART_COMMAND = ["shutdown.exe", "/r", "/t", "60", "/c",
                   "patchflow: restarting to complete updates"]
_KB = re.compile(r"^(?:KB)?(\d{4,9})$", re.IGNORECASE)

# Exit codes the script uses: 0 and 3010 as Windows Installer does, 1603 for a failed install,
# 2 when Windows Update does not offer the KB to this machine.
WUA_SCRIPT = r"""
$ErrorActionPreference = 'Stop'
try {
  $kb = '__KB__'
  $session = New-Object -ComObject Microsoft.Update.Session
  $session.ClientApplicationID = 'patchflow-agent'
  $found = $session.CreateUpdateSearcher().Search("IsInstalled=0 and IsHidden=0").Updates
  $updates = New-Object -ComObject Microsoft.Update.UpdateColl
  foreach ($u in $found) {
    if ($u.KBArticleIDs -contains $kb) {
      if (-not $u.EulaAccepted) { $u.AcceptEula() }
      [void]$updates.Add($u)
    }
  }
  if ($updates.Count -eq 0) {
    Write-Output "KB$kb is not offered by Windows Update to this machine"; exit 2
  }
  $downloader = $session.CreateUpdateDownloader(); $downloader.Updates = $updates
  [void]$downloader.Download()
  $installer = $session.CreateUpdateInstaller(); $installer.Updates = $updates
  $r = $installer.Install()
  if ($r.ResultCode -ne 2 -and $r.ResultCode -ne 3) {
    Write-Output ("Windows Update result code {0}, HRESULT 0x{1:X8}" -f $r.ResultCode, $r.HResult)
    exit 1603
  }
  if ($r.RebootRequired) { exit 3010 }
  exit 0
} catch {
  Write-Output $_.Exception.Message; exit 1603
}
"""


class ProcessRunner(Protocol):
    def call(self, args: Sequence[str], timeout: float) -> tuple[int, str]:
        """Run to completion; (exit code, the last part of its output)."""


class SubprocessCaller:
    def call(self, args: Sequence[str], timeout: float) -> tuple[int, str]:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
        try:
            done = subprocess.run(list(args), capture_output=True, timeout=timeout, check=False,
                                  creationflags=flags)
        except subprocess.TimeoutExpired:
            return 1603, f"installer still running after {timeout:.0f} s: abandoned"
        except OSError as exc:
            return 1603, f"cannot start {args[0]}: {exc.strerror or exc}"
        output = (done.stdout or b"") + (done.stderr or b"")
        return done.returncode, output.decode("utf-8", "replace")[-500:]


def split_switches(switches: str | None) -> list[str]:
    """Windows-style splitting: quotes group, backslashes are path separators, not escapes."""
    if not switches or not switches.strip():
        return []
    lexer = shlex.shlex(switches, posix=True)
    lexer.whitespace_split = True
    lexer.escape = ""
    return list(lexer)


def wua_command(kb: str | None) -> list[str]:
    match = _KB.match((kb or "").strip())
    if not match:
        raise JobNotSupported(f"not a KB number for Windows Update: {kb!r}")
    script = WUA_SCRIPT.replace("__KB__", match.group(1))
    encoded = base64.b64encode(script.encode("utf-16-le")).decode("ascii")
    return ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
            "-EncodedCommand", encoded]


def install_command(kind: str, path: Path | None, switches: str | None = None,
                    kb: str | None = None) -> list[str]:
    """The silent command line for an installer type (see the module docstring)."""
    kind = kind.lower()
    if kind == "wua":
        return wua_command(kb)
    if path is None:
        raise JobNotSupported(f"a {kind} install needs its file")
    file = str(path)
    if kind in ("msi", "wix"):
        return ["msiexec.exe", "/i", file, "/qn", "/norestart"]
    if kind == "nullsoft":
        return [file, "/S"]
    if kind == "inno":
        return [file, "/VERYSILENT", "/NORESTART"]
    if kind == "msu":
        return ["wusa.exe", file, "/quiet", "/norestart"]
    if kind == "cab":
        return ["dism.exe", "/online", "/add-package", f"/packagepath:{file}", "/quiet",
                "/norestart"]
    if kind in ("burn", "exe"):
        extra = split_switches(switches)
        if not extra and kind == "burn":
            extra = ["/quiet", "/norestart"]
        if not extra:
            raise JobNotSupported("no silent switches are known for this exe installer: "
                                  "not run (it would wait for input)")
        return [file, *extra]
    raise JobNotSupported(f"installer type {kind!r} is not supported by the Windows agent")


class WindowsInstaller:
    """Runs install and uninstall commands and the restart through a ProcessRunner."""

    def __init__(self, runner: ProcessRunner | None = None,
                 timeout: float = INSTALL_TIMEOUT) -> None:
        self.runner = runner or SubprocessCaller()
        self.timeout = timeout

    def install(self, kind: str, path: Path | None, switches: str | None,
                kb: str | None) -> tuple[int, str]:
        return self.runner.call(install_command(kind, path, switches, kb), self.timeout)

    def uninstall(self, command: Sequence[str]) -> tuple[int, str]:
        """A rollback's command, built by agent/uninstall.py from the job's checked spec."""
        return self.runner.call(command, self.timeout)

    def restart(self) -> None:
        self.runner.call(RESTART_COMMAND, 60.0)
