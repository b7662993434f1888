"""The simulated platform: the machine's inventory is a JSON file in the contract schema. The
demo, the tests and the benchmark run agents with it. An install changes the file (the new
program version, the new KB), so the endpoint's next inventory reports what was installed and
the rescan finds the patch gone.

An optional `simulate` section in the file (never sent to the server) scripts the machine:

    "simulate": {
      "exit_codes": {"7zip.7zip": 1603, "KB5900110": 3010, "Mozilla.Firefox": [1618, 0]},
      "install_seconds": 0.5
    }

Keys name a patch by KB, package id or PACKAGE@VERSION; a list gives the code per attempt.
Failed installs leave the inventory as it was; 3010/1641 apply the change and set
pending_reboot. Every installer run is appended to `simulate.ran`, restarts counted in
`simulate.restarts`, so tests can tell what ran and what never did.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

SIMULATE = "simulate"
_APPLIED = {0, 3010, 1641}


class InventoryFileError(Exception):
    """The simulated inventory file is missing or invalid; the message is one line."""


class SimulatedPlatform:
    name = "simulated"

    def __init__(self, inventory_path: Path) -> None:
        self.inventory_path = Path(inventory_path)

    def load_inventory(self) -> dict[str, Any]:
        try:
            doc = json.loads(self.inventory_path.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise InventoryFileError(f"inventory file {self.inventory_path} not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InventoryFileError(f"cannot read {self.inventory_path}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise InventoryFileError(
                f"{self.inventory_path}: malformed JSON: {exc.msg} (line {exc.lineno})"
            ) from None
        if not isinstance(doc, dict):
            raise InventoryFileError(f"{self.inventory_path}: expected one inventory object")
        return doc

    def save_inventory(self, doc: dict[str, Any]) -> None:
        """Atomic replace, so an agent never reads half a file written by an install."""
        tmp = self.inventory_path.with_name(self.inventory_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2), encoding="utf-8")
        os.replace(tmp, self.inventory_path)

    def hostname(self) -> str:
        return str(self.load_inventory().get("hostname", "")).upper()

    def collect_inventory(self) -> dict[str, Any]:
        from patchflow.inventory import validate_documents

        doc = self.load_inventory()
        doc.pop(SIMULATE, None)
        try:
            validate_documents(doc)
        except ValueError as exc:
            raise InventoryFileError(f"{self.inventory_path}: {exc}") from None
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        return {**doc, "collected_at": now}

    def install(self, job: dict[str, Any], path: Path | None) -> tuple[int, str]:
        behaviour = self.load_inventory().get(SIMULATE) or {}
        seconds = float(behaviour.get("install_seconds") or 0)
        from patchflow import faults

        faults.point("agent.installing")  # test hook: the agent dies mid-install
        if seconds > 0:
            time.sleep(seconds)
        doc = self.load_inventory()  # as it is now, after the "work"
        sim = doc.setdefault(SIMULATE, {})
        code = exit_code_for(sim.get("exit_codes") or {}, job)
        patch = job.get("patch") or {}
        sim.setdefault("ran", []).append({
            "job": job.get("id"), "attempt": job.get("attempt"),
            "patch": patch.get("kb") or f"{patch.get('package_id')}@{patch.get('version')}",
            "type": (job.get("installer") or {}).get("type"),
            "file": path.name if path is not None else None, "exit_code": code})
        if code in _APPLIED:
            apply_install(doc, job)
            if code != 0:
                doc["pending_reboot"] = True
        self.save_inventory(doc)
        return code, "" if code in _APPLIED else "simulated installer failure"

    def restart(self) -> None:
        doc = self.load_inventory()
        sim = doc.setdefault(SIMULATE, {})
        sim["restarts"] = int(sim.get("restarts") or 0) + 1
        doc["pending_reboot"] = False
        self.save_inventory(doc)


def exit_code_for(codes: dict[str, Any], job: dict[str, Any]) -> int:
    """The scripted exit code for this job's patch (0 when none is scripted)."""
    patch = job.get("patch") or {}
    names = {str(v).casefold() for v in (
        patch.get("kb"), patch.get("package_id"),
        f"{patch.get('package_id')}@{patch.get('version')}" if patch.get("package_id") else None,
    ) if v}
    for key, value in codes.items():
        if str(key).casefold() in names:
            if isinstance(value, list):
                attempt = max(1, int(job.get("attempt") or 1))
                return int(value[min(attempt, len(value)) - 1]) if value else 0
            return int(value)
    return 0


def apply_install(doc: dict[str, Any], job: dict[str, Any]) -> None:
    """What the real installer would leave in the registry: the program at the new version, or
    the KB. An upgrade replaces the entry the scan matched (see `installed_entry`), as Windows
    does, instead of adding a second entry beside the old one; the entry takes the installer's
    display name of the same name family, or keeps its name with the version replaced."""
    patch = job.get("patch") or {}
    installer = job.get("installer") or {}
    today = dt.date.today().isoformat()
    if patch.get("package_id") and patch.get("version"):
        version = str(patch["version"])
        arch = _arch_of(installer.get("arch"))
        programs = doc.setdefault("programs", [])
        names = [str(n) for n in installer.get("display_names") or [] if n]
        entry = installed_entry(programs, patch, installer)
        if entry is not None:
            old = str(entry.get("version") or "")
            same = [n for n in names if _family(n) == _family(entry.get("name"))]
            if same:
                entry["name"] = same[0]
            elif old and old in str(entry.get("name", "")):
                entry["name"] = str(entry["name"]).replace(old, version)
            entry["version"] = version
            entry["install_date"] = today
            entry["arch"] = _arch_of(entry.get("arch")) or arch
            for key in ("product_code", "upgrade_code"):
                if installer.get(key):
                    entry[key] = installer[key]
        else:
            package = str(patch.get("package_name") or patch.get("title") or patch["package_id"])
            own = [n for n in names if _family(n) in _package_families(patch)] or names
            programs.append({
                "name": own[0] if own else f"{package} {version}", "version": version,
                "publisher": patch.get("vendor"), "product_code": installer.get("product_code"),
                "upgrade_code": installer.get("upgrade_code"), "arch": arch,
                "scope": "machine", "install_date": today})
    if patch.get("kb"):
        updates = doc.setdefault("updates", [])
        if not any(str(u.get("kb", "")).upper() == patch["kb"].upper() for u in updates):
            updates.append({"kb": patch["kb"], "installed_on": today})


def installed_entry(programs: list[dict[str, Any]], patch: dict[str, Any],
                    installer: dict[str, Any]) -> dict[str, Any] | None:
    """The program entry an install of this package updates, matched like the scan matches,
    always of the installer's architecture: the same ProductCode or UpgradeCode; else the
    package's name family (version, architecture and locale taken out, so "Mozilla Firefox
    (x64 en-US)" is of "Mozilla Firefox (en-US)") with agreeing publishers; else the family of
    one of the installer's display names. Among several, the highest version: the copy in use,
    which the scan judged."""
    from applicability.names import (
        infer_arch,
        normalize_code,
        normalize_publisher,
        publishers_agree,
    )
    from sources.versions import version_key

    arch = _arch_of(installer.get("arch"))
    codes = {normalize_code(installer.get(k)) for k in ("product_code", "upgrade_code")}
    codes.discard(None)
    package = _package_families(patch)
    display = {_family(n) for n in installer.get("display_names") or []} - {""}
    vendor = normalize_publisher(patch.get("vendor"))

    def rank(program: dict[str, Any]) -> int | None:
        own = _arch_of(program.get("arch")) or infer_arch(program.get("name"))
        if arch is not None and own is not None and own != arch:
            return None
        if codes & {normalize_code(program.get(k)) for k in ("product_code", "upgrade_code")}:
            return 0
        if not publishers_agree(normalize_publisher(program.get("publisher")), vendor):
            return None
        family = _family(program.get("name"))
        return 1 if family in package else 2 if family in display else None

    ranked = [(r, p) for p in programs if isinstance(p, dict) and (r := rank(p)) is not None]
    if not ranked:
        return None
    best = min(r for r, _p in ranked)
    return max((p for r, p in ranked if r == best),
               key=lambda p: version_key(str(p.get("version") or "")))


def _package_families(patch: dict[str, Any]) -> set[str]:
    return {f for f in (_family(patch.get("package_name")), _family(patch.get("title"))) if f}


def _family(name: object) -> str:
    """The scan's match key of a display name (applicability.names, loaded only when an
    install is simulated: the agent itself does not need the scan's modules)."""
    from applicability.names import normalize_name

    return normalize_name(name)


def _arch_of(value: object) -> str | None:
    arch = str(value or "").strip().lower()
    return arch if arch in ("x64", "x86", "arm64") else None
