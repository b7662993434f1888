"""The agent's state directory: its identity (agent id, secret, server, pinned certificate), an
outbox of job results not yet delivered, and the last inventory the server acknowledged (what a
delta upload is computed against). Files holding the secret are created 0600 and the directory
0700, before anything is written into them."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agent.transport import inventory_digest

STATE_FILE = "agent.json"
CA_FILE = "server-ca.pem"
OUTBOX = "outbox"
DOWNLOADS = "downloads"
RAN = "ran"
INVENTORY_FILE = "inventory.json"
RAN_KEPT = 2000  # ledger entries kept; older ones are long delivered


class StateError(Exception):
    """The state directory is missing, unreadable or not enrolled; the message is one line."""


def default_state_dir() -> Path:
    configured = os.environ.get("PATCHFLOW_AGENT_STATE_DIR")
    if configured:
        return Path(configured)
    if sys.platform == "win32":
        return Path(os.environ.get("PROGRAMDATA", r"C:\ProgramData")) / "patchflow-agent"
    return Path.home() / ".patchflow-agent"


@dataclass
class Identity:
    server: str
    agent_id: str
    secret: str
    hostname: str
    fingerprint: str | None = None  # pinned leaf certificate, "AB:CD:..."
    ca_file: str | None = None  # or a pinned CA bundle, copied into the state dir


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def ensure(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.path / OUTBOX).mkdir(exist_ok=True, mode=0o700)
        if sys.platform != "win32":
            os.chmod(self.path, 0o700)

    # --- identity ----------------------------------------------------------------------------

    def save_identity(self, identity: Identity, ca_pem: bytes | None = None) -> None:
        """A new enrolment (perhaps with another server) starts from a whole inventory."""
        self.ensure()
        self.forget_inventory()
        if ca_pem is not None:
            _write_private(self.path / CA_FILE, ca_pem)
            identity.ca_file = CA_FILE
        _write_private(self.path / STATE_FILE, json.dumps(asdict(identity), indent=2).encode())

    def load_identity(self) -> Identity:
        path = self.path / STATE_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Identity(**data)
        except FileNotFoundError:
            raise StateError(f"not enrolled: no {path} (run `patchflow-agent enroll`)") from None
        except (OSError, ValueError, TypeError) as exc:
            raise StateError(f"cannot read {path}: {exc}") from None

    def ca_path(self, identity: Identity) -> Path | None:
        return self.path / identity.ca_file if identity.ca_file else None

    # --- last acknowledged inventory ---------------------------------------------------------

    def save_inventory(self, doc: dict[str, Any], digest: str, full_at: float) -> None:
        """Remember what the server now holds, so the next upload can be a delta against it.

        `full_at` dates the last whole upload (the runner's to decide: deltas keep the one
        before): deltas only ever build on it, and a periodic full upload bounds how long a
        server-side drift could go unnoticed. Written atomically and 0600: not secret, but it
        is this machine's software list."""
        self.ensure()
        data = {"digest": digest, "full_at": full_at, "doc": doc}
        _write_private(self.path / INVENTORY_FILE,
                       json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())

    def load_inventory(self) -> tuple[dict[str, Any], str, float] | None:
        """(doc, digest, full_at), or None when missing, unreadable, or not matching its own
        digest: a delta built on a wrong base would be refused at best, so such a file only
        costs one full upload."""
        try:
            data = json.loads((self.path / INVENTORY_FILE).read_text(encoding="utf-8"))
            doc, digest, full_at = data["doc"], data["digest"], data["full_at"]
            if (not isinstance(doc, dict) or not isinstance(digest, str)
                    or isinstance(full_at, bool) or not isinstance(full_at, int | float)
                    or inventory_digest(doc) != digest):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return doc, digest, float(full_at)

    def forget_inventory(self) -> None:
        (self.path / INVENTORY_FILE).unlink(missing_ok=True)

    # --- outbox ------------------------------------------------------------------------------

    def queue_result(self, job_id: int, result: dict[str, Any]) -> Path:
        """Persist a job result before the first delivery attempt: a crash or an unreachable
        server must not lose what an install did."""
        self.ensure()
        name = f"{time.time_ns():020d}-{int(job_id)}.json"
        path = self.path / OUTBOX / name
        _write_private(path, json.dumps({"job_id": int(job_id), "result": result}).encode())
        return path

    def pending_results(self) -> list[tuple[Path, int, dict[str, Any]]]:
        """Queued results, oldest first; unreadable files are set aside, not retried forever."""
        outbox = self.path / OUTBOX
        if not outbox.is_dir():
            return []
        pending = []
        for path in sorted(outbox.glob("*.json")):
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                pending.append((path, int(data["job_id"]), dict(data["result"])))
            except (OSError, ValueError, KeyError, TypeError):
                path.rename(path.with_suffix(".bad"))
        return pending

    # --- install jobs ------------------------------------------------------------------------

    def downloads(self) -> Path:
        """Where installers are downloaded and verified before they run."""
        path = self.path / DOWNLOADS
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def _ran_marker(self, job_id: int, attempt: int) -> Path:
        return self.path / RAN / f"{int(job_id)}-{int(attempt)}"

    def has_run(self, job_id: int, attempt: int) -> bool:
        """Whether this attempt of a job already ran here: its result is in the outbox or
        delivered, so a job offered again before the server heard of it is not run twice."""
        return self._ran_marker(job_id, attempt).exists()

    def mark_run(self, job_id: int, attempt: int) -> None:
        marker = self._ran_marker(job_id, attempt)
        marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        marker.touch()
        markers = sorted(marker.parent.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in markers[:-RAN_KEPT]:
            old.unlink(missing_ok=True)
