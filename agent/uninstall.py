"""Rolling a patch back: the silent uninstall command for an uninstall job, and what its exit code
means. Standard library only and pure, because both sides use it: the server builds the spec
from the endpoint's reported inventory and refuses up front what cannot be uninstalled silently
(patchflow/install/rollback.py); the agent builds the command line again from the same spec and
runs it (Windows) or applies it to its inventory file (simulated).

    msu   wusa.exe /uninstall /kb:N /quiet /norestart
    msi   msiexec.exe /x {ProductCode} /qn /norestart
    exe   the program's UninstallString + the known silent switches of its installer type
          (nullsoft /S, inno /VERYSILENT /SUPPRESSMSGBOXES /NORESTART, burn /uninstall /quiet
          /norestart); anything else is refused: an uninstaller waiting for clicks on a
          session-0 desktop never ends.

A spec is a dict: {"type": "msu", "kb": "KB5034123"}, {"type": "msi", "product_code": "{…}"}
or {"type": "exe", "installer_type": "nullsoft", "uninstall_string": "…"}, plus `program`
(the inventory entry removed, for the simulated agent and for people reading the job).
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from agent.exitcodes import interpret as exit_outcome

MSU, MSI, EXE = "msu", "msi", "exe"
_KB = re.compile(r"^(?:KB)?(\d{4,9})$", re.IGNORECASE)
_GUID = re.compile(r"^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-"
                   r"[0-9A-Fa-f]{12}\}$")
# Installer types whose uninstallers have documented silent switches.
SILENT_UNINSTALL = {
    "nullsoft": ["/S"],
    "inno": ["/VERYSILENT", "/SUPPRESSMSGBOXES", "/NORESTART"],
    "burn": ["/uninstall", "/quiet", "/norestart"],
}
# Windows' own answers for "this is not installed": wusa 0x80240017 / 2359303, msiexec 1605.
NOT_INSTALLED = {2359303: "the update is not installed", 0x80240017: "the update is not installed",
                 1605: "the product is not installed"}


class UninstallRefused(ValueError):
    """No silent uninstall can be built from this spec; the message says why (one line)."""


def is_product_code(value: Any) -> bool:
    return isinstance(value, str) and bool(_GUID.match(value.strip()))


def _split(command: str) -> list[str]:
    """An UninstallString as Windows reads it: quotes group, backslashes are not escapes."""
    lexer = shlex.shlex(command, posix=True)
    lexer.whitespace_split = True
    lexer.escape = ""
    try:
        return list(lexer)
    except ValueError:
        raise UninstallRefused(f"unreadable UninstallString {command[:120]!r}") from None


def uninstall_command(spec: Any) -> list[str]:
    """The command line for an uninstall spec (see the module docstring), or UninstallRefused."""
    if not isinstance(spec, dict):
        raise UninstallRefused("no uninstall description in the job (malformed job)")
    kind = str(spec.get("type") or "").lower()
    if kind == MSU:
        match = _KB.match(str(spec.get("kb") or "").strip())
        if not match:
            raise UninstallRefused(f"not a KB number to uninstall: {spec.get('kb')!r}")
        return ["wusa.exe", "/uninstall", f"/kb:{match.group(1)}", "/quiet", "/norestart"]
    if kind == MSI:
        code = spec.get("product_code")
        if not is_product_code(code):
            raise UninstallRefused(f"not a Windows Installer ProductCode: {code!r}")
        return ["msiexec.exe", "/x", str(code).strip().upper(), "/qn", "/norestart"]
    if kind == EXE:
        installer = str(spec.get("installer_type") or "exe").lower()
        command = str(spec.get("uninstall_string") or "").strip()
        if not command:
            raise UninstallRefused("the endpoint's inventory reports no UninstallString for "
                                   "this program: it cannot be uninstalled silently")
        switches = SILENT_UNINSTALL.get(installer)
        if switches is None:
            raise UninstallRefused(f"no silent uninstall switches are known for a {installer} "
                                   "installer: not run (its uninstaller would wait for input)")
        argv = _split(command)
        if not argv:
            raise UninstallRefused("the program's UninstallString is empty")
        return [*argv, *[s for s in switches if s.casefold() not in
                         {a.casefold() for a in argv[1:]}]]
    raise UninstallRefused(f"uninstall type {kind or None!r} is not supported")


def interpret(exit_code: int, allow_restart: bool, output: str = "") -> tuple[str, str, bool]:
    """(state, message, restart now) for an uninstaller's exit code."""
    return exit_outcome(exit_code, allow_restart, output, done="uninstalled",
                        program="uninstall", known=NOT_INSTALLED)
