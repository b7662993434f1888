"""Which installed program an install of a package replaces, and the name it will carry: the
server works it out with the scan's own matching rules and sends it in the job (`program`), so
an agent that simulates the install (agent/platforms/simulated.py) updates that entry without
the scan's modules. A real installer ignores it: Windows writes its own registry keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from applicability.names import (
    infer_arch,
    normalize_code,
    normalize_name,
    normalize_publisher,
    publishers_agree,
)
from sources.versions import version_key

PROGRAM_KEYS = ("name", "version", "arch", "product_code", "upgrade_code")


def program_target(programs: Iterable[Mapping[str, Any]], patch: Mapping[str, Any],
                   installer: Mapping[str, Any]) -> dict[str, Any]:
    """`{"name": ..., "replaces": ...}`: the entry the install updates (see `installed_entry`)
    and the installer's display name of the same name family (None: the entry keeps its name,
    its version replaced); with nothing installed, the display name of the package's own
    family, else the installer's first one."""
    names = [str(n) for n in installer.get("display_names") or [] if n]
    entry = installed_entry(programs, patch, installer)
    if entry is not None:
        same = [n for n in names if _family(n) == _family(entry.get("name"))]
        return {"name": same[0] if same else None,
                "replaces": {k: entry.get(k) for k in PROGRAM_KEYS}}
    own = [n for n in names if _family(n) in _package_families(patch)] or names
    return {"name": own[0] if own else None, "replaces": None}


def installed_entry(programs: Iterable[Mapping[str, Any]], patch: Mapping[str, Any],
                    installer: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The program entry an install of this package updates, matched like the scan matches,
    always of the installer's architecture: the same ProductCode or UpgradeCode; else the
    package's name family (version, architecture and locale taken out, so "Mozilla Firefox
    (x64 en-US)" is of "Mozilla Firefox (en-US)") with agreeing publishers; else the family of
    one of the installer's display names. Among several, the highest version: the copy in use,
    which the scan judged."""
    arch = _arch_of(installer.get("arch"))
    codes = {normalize_code(installer.get(k)) for k in ("product_code", "upgrade_code")}
    codes.discard(None)
    package = _package_families(patch)
    display = {_family(n) for n in installer.get("display_names") or []} - {""}
    vendor = normalize_publisher(patch.get("vendor"))

    def rank(program: Mapping[str, Any]) -> int | None:
        own = _arch_of(program.get("arch")) or infer_arch(program.get("name"))
        if arch is not None and own is not None and own != arch:
            return None
        if codes & {normalize_code(program.get(k)) for k in ("product_code", "upgrade_code")}:
            return 0
        if not publishers_agree(normalize_publisher(program.get("publisher")), vendor):
            return None
        family = _family(program.get("name"))
        return 1 if family in package else 2 if family in display else None

    ranked = [(r, p) for p in programs if (r := rank(p)) is not None]
    if not ranked:
        return None
    best = min(r for r, _p in ranked)
    return max((p for r, p in ranked if r == best),
               key=lambda p: version_key(str(p.get("version") or "")))


def _package_families(patch: Mapping[str, Any]) -> set[str]:
    return {f for f in (_family(patch.get("package_name")), _family(patch.get("title"))) if f}


def _family(name: object) -> str:
    return normalize_name(name)


def _arch_of(value: object) -> str | None:
    arch = str(value or "").strip().lower()
    return arch if arch in ("x64", "x86", "arm64") else None
