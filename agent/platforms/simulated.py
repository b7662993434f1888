"""The simulated platform: the machine's inventory is a JSON file in the contract schema. The
demo, the tests and the benchmark run agents with it; installs (a later layer) will change the
file through `save_inventory`, so a simulated endpoint reports what was installed on it."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from agent.platforms.base import JobNotSupported


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
        try:
            validate_documents(doc)
        except ValueError as exc:
            raise InventoryFileError(f"{self.inventory_path}: {exc}") from None
        now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
        return {**doc, "collected_at": now}

    def run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        raise JobNotSupported("the simulated platform does not run install jobs yet")
