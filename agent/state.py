"""The agent's state directory: its identity (agent id, secret, server, pinned certificate) and
an outbox of job results not yet delivered. Files holding the secret are created 0600 and the
directory 0700, before anything is written into them."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "agent.json"
CA_FILE = "server-ca.pem"
OUTBOX = "outbox"
DOWNLOADS = "downloads"
RAN = "ran"
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
        self.ensure()
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
