"""Running one install job on the endpoint: download, verify, install, decide about the restart.
(A rollback's uninstall job has no file: its command comes from agent/uninstall.py.)

The order is the safety property: the file is downloaded to the agent's own folder, its SHA-256
is compared with the one the server sent, and only a file that matches is handed to the
platform's installer. A mismatch deletes the file and reports failure; nothing else runs.

Exit codes mean what Windows Installer and wusa say they mean: 0 success; 3010 and 1641 a
restart is needed; 1602 (cancelled) and 1618 (another installation running) are worth retrying;
anything else failed. A needed restart happens only when the job allows it; otherwise the
result is "reboot pending" and the machine is left for its user to restart.
"""

from __future__ import annotations

import hashlib
import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.exitcodes import interpret as exit_outcome
from agent.platforms.base import JobNotSupported, Platform
from agent.state import StateDir
from agent.transport import AgentError, ServerClient, download_url
from agent.uninstall import UninstallRefused, uninstall_command
from agent.uninstall import interpret as interpret_uninstall

log = logging.getLogger("patchflow.agent")

# Worth another attempt: the user cancelled, or another installation was running.
RETRYABLE_CODES = {1602: "cancelled", 1618: "another installation is in progress"}
_SHA = re.compile(r"^[0-9a-f]{64}$")
_SAFE_NAME = re.compile(r"[^A-Za-z0-9 ._+()@-]")


class JobRejected(Exception):
    """The job cannot be run as given (malformed, unsupported); reported as failed."""


class HashMismatch(Exception):
    """The downloaded file is not the one the job names; it was deleted, nothing ran."""


@dataclass
class InstallSpec:
    """The parts of a job the agent acts on, checked."""

    job_id: int
    attempt: int
    type: str
    url: str | None
    sha256: str | None
    file_name: str
    allow_restart: bool
    label: str

    @classmethod
    def parse(cls, job: dict[str, Any]) -> InstallSpec:
        job_id = job.get("id")
        installer = job.get("installer")
        if not isinstance(job_id, int) or not isinstance(installer, dict) or \
                not installer.get("type"):
            raise JobRejected(f"job {job_id}: this agent does not run install jobs without an "
                              "installer description (malformed job)")
        kind = str(installer["type"]).lower()
        given = job.get("patch")
        patch: dict[str, Any] = given if isinstance(given, dict) else {}
        label = str(patch.get("kb") or (f"{patch.get('package_id')} {patch.get('version')}"
                                        if patch.get("package_id") else f"job {job_id}"))
        url = installer.get("url")
        sha = str(installer.get("sha256") or "").lower() or None
        if kind != "wua" and (not url or not sha or not _SHA.match(sha)):
            raise JobRejected(f"job {job_id}: a {kind} installer needs a URL and a SHA-256")
        name = _SAFE_NAME.sub("_", str(installer.get("file_name") or "")).strip(" .") or \
            f"installer.{kind}"
        return cls(job_id, int(job.get("attempt") or 1), kind, url, sha, name,
                   bool(job.get("allow_restart")), label)


def result(state: str, message: str, spec: InstallSpec | None, exit_code: int | None = None,
           retryable: bool = False, restart: bool = False) -> dict[str, Any]:
    """A result document; `result_id` makes a re-sent result count once on the server."""
    details: dict[str, Any] = {"result_id": uuid.uuid4().hex, "retryable": retryable}
    if spec is not None:
        details["attempt"] = spec.attempt
    if restart:
        details["restart"] = True
    return {"state": state, "exit_code": exit_code, "message": message[:4000],
            "details": details}


def interpret(exit_code: int, allow_restart: bool, output: str = "") -> tuple[str, str, bool]:
    """(state, message, restart now) for an installer's exit code."""
    return exit_outcome(exit_code, allow_restart, output, done="installed", program="installer",
                        known=RETRYABLE_CODES)


Progress = Callable[[str, "InstallSpec"], None]


class JobExecutor:
    """Runs jobs for one agent: its server connection, state folder and platform."""

    def __init__(self, client: ServerClient, state: StateDir, platform: Platform,
                 progress: Progress | None = None, vendor_timeout: float = 60.0) -> None:
        self.client = client
        self.state = state
        self.platform = platform
        self.progress = progress or (lambda _state, _spec: None)
        self.vendor_timeout = vendor_timeout

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        if job.get("kind") == "uninstall":
            return self.run_uninstall(job)
        try:
            spec = InstallSpec.parse(job)
        except JobRejected as exc:
            return result("failed", str(exc), None)
        path: Path | None = None
        try:
            if spec.type != "wua":
                self.progress("downloading", spec)
                try:
                    path = self.fetch(spec)
                except HashMismatch as exc:
                    log.error("job %s: %s", spec.job_id, exc)
                    return result("failed", str(exc), spec)
                except (AgentError, OSError) as exc:
                    return result("failed", f"download failed: {exc}", spec, retryable=True)
            self.progress("installing", spec)
            try:
                exit_code, output = self.platform.install(job, path)
            except JobNotSupported as exc:
                return result("failed", str(exc), spec)
            state, message, restart = interpret(exit_code, spec.allow_restart, output)
            return result(state, message, spec, exit_code,
                          retryable=exit_code in RETRYABLE_CODES, restart=restart)
        finally:
            if path is not None:
                path.unlink(missing_ok=True)

    def run_uninstall(self, job: dict[str, Any]) -> dict[str, Any]:
        """A rollback's item: build the silent uninstall command from the job's spec (refused,
        and nothing run, when none can be built) and let the platform run it."""
        job_id = job.get("id")
        if not isinstance(job_id, int):
            return result("failed", "uninstall job without an id (malformed job)", None)
        patch = job.get("patch") if isinstance(job.get("patch"), dict) else {}
        label = str(patch.get("kb") or f"{patch.get('package_id')} {patch.get('version')}")
        spec = InstallSpec(job_id, int(job.get("attempt") or 1), "uninstall", None, None, "",
                           bool(job.get("allow_restart")), label)
        try:
            command = uninstall_command(job.get("uninstall"))
        except UninstallRefused as exc:
            return result("failed", f"not uninstalled: {exc}", spec)
        uninstall = getattr(self.platform, "uninstall", None)
        if uninstall is None:
            return result("failed", f"the {self.platform.name} platform cannot uninstall", spec)
        self.progress("installing", spec)
        try:
            exit_code, output = uninstall(job, command)
        except JobNotSupported as exc:
            return result("failed", str(exc), spec)
        state, message, restart = interpret_uninstall(exit_code, spec.allow_restart, output)
        return result(state, message, spec, exit_code,
                      retryable=exit_code in RETRYABLE_CODES, restart=restart)

    def fetch(self, spec: InstallSpec) -> Path:
        """Download and verify; HashMismatch (the file deleted) when the SHA-256 differs."""
        folder = self.state.downloads() / (spec.sha256 or "x")[:16]
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / spec.file_name
        part = final.with_name(final.name + ".part")
        assert spec.url is not None
        with part.open("wb") as out:
            if spec.url.startswith("/"):
                self.client.download(spec.url, out)
            else:
                download_url(spec.url, out, timeout=self.vendor_timeout)
        digest = hashlib.sha256()
        with part.open("rb") as handle:
            while block := handle.read(1 << 16):
                digest.update(block)
        actual = digest.hexdigest()
        if actual != spec.sha256:
            part.unlink(missing_ok=True)
            raise HashMismatch(f"downloaded file's SHA-256 {actual} does not match the job's "
                               f"{spec.sha256}: deleted, installer not run")
        part.replace(final)
        return final
