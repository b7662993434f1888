"""What an installer's or uninstaller's exit code means: done, done but a restart is needed
(3010, 1641: Windows Installer's and wusa's convention), or failed, with a one-line message."""

from __future__ import annotations

from collections.abc import Mapping

REBOOT_CODES = frozenset({3010, 1641})


def interpret(exit_code: int, allow_restart: bool, output: str, *, done: str, program: str,
              known: Mapping[int, str]) -> tuple[str, str, bool]:
    """(state, message, restart now). `done` is the past tense of the action ("installed"),
    `program` what ran ("installer"), `known` the failing codes worth naming."""
    tail = f": {output.strip()[:300]}" if output and output.strip() else ""
    if exit_code == 0:
        return "succeeded", f"{done} (exit code 0){tail}", False
    if exit_code in REBOOT_CODES:
        if allow_restart:
            return "succeeded", f"{done}; restarting to complete (exit code {exit_code})", True
        return "reboot pending", (f"{done}; a restart is needed to complete (exit code "
                                  f"{exit_code}) and the job does not allow one"), False
    if exit_code in known:
        return "failed", f"exit code {exit_code} ({known[exit_code]}){tail}", False
    return "failed", f"{program} failed with exit code {exit_code}{tail}", False
