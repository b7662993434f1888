"""Background rescans in a process of their own, for a server on MariaDB.

A rescan is CPU for the server's one interpreter: a 64-endpoint rescan takes 65-150 ms of
it, mostly the engine's fixed cost per batch, and while it runs the uploads in flight wait for
the GIL. Under a burst of changed uploads on MariaDB, phases in which no rescan ran had a p99
of 201 ms against 280-340 ms with them (bench.agent_api). In a child process the rescans get a
core of their own and the server keeps its interpreter for the agents.

Only on MariaDB: SQLite allows one writer at a time, and a writer in another process meets
SQLite's busy handler (sleeps of up to 100 ms) instead of the server's writer queue
(patchflow.fleet.transactions), which is what made the uploads' tail before that queue.

The protocol is a line of JSON each way: the endpoint ids, then `{"scanned": n}` or
`{"error": "<one line>"}`. The child exits when its input closes: at the server's shutdown,
or when the server died (the pipe closes with it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import IO

from models.db import get_engine

log = logging.getLogger(__name__)


class ScanProcessError(RuntimeError):
    """The child refused or failed a rescan, or ended; the queue logs it and goes on."""


class ScanProcess:
    """Called like scan_now with a batch of ids. `start` starts the child ahead of the first
    batch (its imports take ~1.5 s of CPU, better spent at the server's start than in the
    first burst of uploads); a call starts it again after it ended."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._child: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def __call__(self, endpoint_ids: list[int]) -> int:
        with self._lock:
            child = self._running()
            assert child.stdin is not None and child.stdout is not None
            try:
                child.stdin.write(json.dumps(endpoint_ids) + "\n")
                child.stdin.flush()
                line = child.stdout.readline()
            except OSError:
                line = ""
            if not line:
                self._stop()
                raise ScanProcessError("the rescan process ended; the next rescan starts another")
            try:
                answer = json.loads(line)
            except ValueError:
                self._stop()
                raise ScanProcessError(f"the rescan process answered {line[:80]!r}") from None
            if "error" in answer:
                raise ScanProcessError(str(answer["error"]))
            return int(answer["scanned"])

    def start(self) -> ScanProcess:
        with self._lock:
            self._running()
        return self

    def close(self) -> None:
        with self._lock:
            self._stop()

    def _running(self) -> subprocess.Popen[str]:
        if self._child is None or self._child.poll() is not None:
            env = {**os.environ, "PATCHFLOW_DATABASE_URL": self.database_url}
            self._child = subprocess.Popen(
                [sys.executable, "-m", "patchflow.scanning.scan_process"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
                encoding="utf-8")
        return self._child

    def _stop(self) -> None:
        child, self._child = self._child, None
        if child is None:
            return
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):  # a dead child's pipe
                    stream.close()
        try:
            child.wait(timeout=30)  # a scan in progress is finished, not cut
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def for_database(database_url: str | None) -> ScanProcess | None:
    """A rescan process for a server on MariaDB, started; None on SQLite (rescans stay in
    process)."""
    if database_url is None or get_engine(database_url).dialect.name != "mysql":
        return None
    return ScanProcess(database_url).start()


def serve(requests: IO[str], answers: IO[str]) -> None:
    """The child's loop: one batch per line until the input closes."""
    from patchflow.errors import one_line
    from patchflow.scanning.service import scan_now

    for line in requests:
        try:
            ids = [int(i) for i in json.loads(line)]
            counts = scan_now(ids, trigger="inventory")
            answer = {"scanned": counts.scanned}
        except Exception as exc:  # answered, and the loop goes on: one batch fails alone
            log.exception("background rescan failed")
            answer = {"error": one_line(exc, 500)}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def main() -> None:
    # A Ctrl+C in `serve`'s terminal reaches this process group too: the server ends this
    # child by closing its input, after the scan in progress, with no traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The answers keep the real stdout; anything else written there (a library's print, a
    # warning) goes to stderr, the server's log, instead of into the protocol.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s rescan: %(message)s")
    serve(sys.stdin, answers)


if __name__ == "__main__":
    main()
