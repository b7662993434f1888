"""How the Windows collector reads the machine: a registry reader and a command runner. The real
ones use winreg and subprocess; tests (and offline diagnosis) use DictRegistry and a runner
that returns captured outputs, so every collector rule is exercised off Windows."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

HKLM = "HKEY_LOCAL_MACHINE"
HKU = "HKEY_USERS"


class RegistryReader(Protocol):
    def subkeys(self, hive: str, path: str) -> list[str]:
        """Names of the key's subkeys; [] when the key does not exist."""

    def values(self, hive: str, path: str) -> dict[str, Any] | None:
        """The key's values by name; None when the key does not exist."""


class CommandRunner(Protocol):
    def run(self, args: Sequence[str], timeout: float = 120.0) -> bytes | None:
        """The command's stdout; None when it is missing, fails or times out."""


class WinregReader:
    """The live registry, always through the 64-bit view: the 32-bit one is reached by its
    explicit WOW6432Node path, so a 32-bit Python agent sees what a 64-bit one would."""

    def __init__(self) -> None:
        import importlib

        # Typed as Any: the module exists only on Windows, and its stubs say so.
        winreg: Any = importlib.import_module("winreg")
        self._winreg = winreg
        self._hives = {HKLM: winreg.HKEY_LOCAL_MACHINE, HKU: winreg.HKEY_USERS}
        self._access = winreg.KEY_READ | winreg.KEY_WOW64_64KEY

    def _open(self, hive: str, path: str) -> Any:
        try:
            return self._winreg.OpenKey(self._hives[hive], path, 0, self._access)
        except OSError:
            return None

    def subkeys(self, hive: str, path: str) -> list[str]:
        key = self._open(hive, path)
        if key is None:
            return []
        names = []
        with key:
            index = 0
            while True:
                try:
                    names.append(self._winreg.EnumKey(key, index))
                except OSError:
                    break
                index += 1
        return names

    def values(self, hive: str, path: str) -> dict[str, Any] | None:
        key = self._open(hive, path)
        if key is None:
            return None
        found: dict[str, Any] = {}
        with key:
            index = 0
            while True:
                try:
                    name, value, _kind = self._winreg.EnumValue(key, index)
                except OSError:
                    break
                found[name] = value
                index += 1
        return found


class SubprocessRunner:
    def run(self, args: Sequence[str], timeout: float = 120.0) -> bytes | None:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
        try:
            done = subprocess.run(list(args), capture_output=True, timeout=timeout, check=False,
                                  creationflags=flags)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None


class DictRegistry:
    """A registry from a mapping of `HIVE\\path\\to\\key` → {value name: value}. Key names are
    case-insensitive, as in the real registry; parents of listed keys exist implicitly."""

    def __init__(self, keys: Mapping[str, Mapping[str, Any]]) -> None:
        self._values: dict[str, dict[str, Any]] = {}
        self._children: dict[str, dict[str, str]] = {}
        for full, values in keys.items():
            self._add(full.strip("\\"), dict(values))

    def _add(self, full: str, values: dict[str, Any] | None) -> None:
        lower = full.lower()
        if values is not None:
            self._values.setdefault(lower, {}).update(values)
        parts = full.split("\\")
        for depth in range(1, len(parts)):
            parent = "\\".join(parts[:depth]).lower()
            self._children.setdefault(parent, {}).setdefault(parts[depth].lower(), parts[depth])

    def _key(self, hive: str, path: str) -> str:
        return f"{hive}\\{path}".strip("\\").lower() if path else hive.lower()

    def subkeys(self, hive: str, path: str) -> list[str]:
        return list(self._children.get(self._key(hive, path), {}).values())

    def values(self, hive: str, path: str) -> dict[str, Any] | None:
        key = self._key(hive, path)
        if key in self._values:
            return dict(self._values[key])
        return {} if key in self._children else None


class CannedRunner:
    """Answers commands from captured outputs: {"wmic qfe": b"...", ...}; others are missing."""

    def __init__(self, outputs: Mapping[str, bytes]) -> None:
        self._outputs = {k.lower(): v for k, v in outputs.items()}
        self.calls: list[str] = []

    def run(self, args: Sequence[str], timeout: float = 120.0) -> bytes | None:
        line = " ".join(args).lower()
        self.calls.append(line)
        for prefix, output in self._outputs.items():
            if line.startswith(prefix):
                return output
        return None
