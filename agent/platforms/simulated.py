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
`uninstall_exit_codes` does the same for rollbacks, which take the KB or program out of the
file (agent/uninstall.py builds the command, recorded in `ran` as Windows would run it).
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

from agent import faults
from agent.schema import check

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
        doc = self.load_inventory()
        doc.pop(SIMULATE, None)
        try:
            check(doc)
        except ValueError as exc:
            raise InventoryFileError(f"{self.inventory_path}: {exc}") from None
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        return {**doc, "collected_at": now}

    def install(self, job: dict[str, Any], path: Path | None) -> tuple[int, str]:
        behaviour = self.load_inventory().get(SIMULATE) or {}
        seconds = float(behaviour.get("install_seconds") or 0)
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

    def uninstall(self, job: dict[str, Any], command: list[str]) -> tuple[int, str]:
        """A rollback: the KB or the program entry the job's spec names leaves the file (exit
        codes scripted under `simulate.uninstall_exit_codes`); one that is not there answers as
        Windows does (wusa 2359303, msiexec 1605)."""
        faults.point("agent.installing")
        doc = self.load_inventory()
        sim = doc.setdefault(SIMULATE, {})
        spec = job.get("uninstall") or {}
        code = exit_code_for(sim.get("uninstall_exit_codes") or {}, job)
        if code in _APPLIED and not remove_installed(doc, spec):
            code = 2359303 if spec.get("type") == "msu" else 1605
        elif code in _APPLIED and code != 0:
            doc["pending_reboot"] = True
        patch = job.get("patch") or {}
        sim.setdefault("ran", []).append({
            "job": job.get("id"), "attempt": job.get("attempt"), "action": "uninstall",
            "patch": patch.get("kb") or f"{patch.get('package_id')}@{patch.get('version')}",
            "type": spec.get("type"), "command": list(command), "exit_code": code})
        self.save_inventory(doc)
        return code, "" if code in _APPLIED else "simulated uninstaller failure"

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
    the KB. An upgrade replaces the entry the server names in the job's `program.replaces` (the
    one the scan matched), as Windows does, instead of adding a second entry beside it; the
    entry takes `program.name` (the installer's display name) or keeps its name with the
    version replaced; a new entry takes `program.name`, else the installer's first display
    name."""
    patch = job.get("patch") or {}
    installer = job.get("installer") or {}
    target = job.get("program") or {}
    today = dt.date.today().isoformat()
    if patch.get("package_id") and patch.get("version"):
        version = str(patch["version"])
        arch = _arch_of(installer.get("arch"))
        programs = doc.setdefault("programs", [])
        name = str(target["name"]) if target.get("name") else None
        entry = installed_entry(programs, target.get("replaces"))
        if entry is not None:
            old = str(entry.get("version") or "")
            if name:
                entry["name"] = name
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
            shown = [str(n) for n in installer.get("display_names") or [] if n]
            programs.append({
                "name": name or (shown[0] if shown else f"{package} {version}"),
                "version": version,
                "publisher": patch.get("vendor"), "product_code": installer.get("product_code"),
                "upgrade_code": installer.get("upgrade_code"), "arch": arch,
                "scope": "machine", "install_date": today})
    if patch.get("kb"):
        updates = doc.setdefault("updates", [])
        if not any(str(u.get("kb", "")).upper() == patch["kb"].upper() for u in updates):
            updates.append({"kb": patch["kb"], "installed_on": today})


def remove_installed(doc: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Take the KB or program entry an uninstall spec names out of the inventory; False when
    it is not there."""
    if spec.get("type") == "msu":
        kb = str(spec.get("kb") or "").upper()
        updates = doc.get("updates") or []
        kept = [u for u in updates if str(u.get("kb", "")).upper() != kb]
        doc["updates"] = kept
        return len(kept) != len(updates)
    programs = doc.get("programs") or []
    entry = installed_entry(programs, spec.get("program"))
    if entry is None:
        return False
    doc["programs"] = [p for p in programs if p is not entry]
    return True


def installed_entry(programs: list[Any], replaces: Any) -> dict[str, Any] | None:
    """The inventory entry the server named: the same name, version and architecture (and
    ProductCode when it gave one), compared as stored; no entry when it named none."""
    if not isinstance(replaces, dict) or not replaces.get("name"):
        return None
    keys = [k for k in ("name", "version", "arch", "product_code") if replaces.get(k)]
    for program in programs:
        if isinstance(program, dict) and all(
                str(program.get(k) or "") == str(replaces[k]) for k in keys):
            return program
    return None


def _arch_of(value: object) -> str | None:
    arch = str(value or "").strip().lower()
    return arch if arch in ("x64", "x86", "arm64") else None

