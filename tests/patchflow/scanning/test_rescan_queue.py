"""When the background rescan queue scans: after uploads pause, within `max_wait` under
continuous uploads, at once for a full batch, and everything queued exactly once."""

from __future__ import annotations

import threading
import time

from patchflow.scanning.service import BATCH_SIZE, RescanQueue


class Recorder:
    """The queue's scan: records each batch and when it came."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, list[int]]] = []
        self.lock = threading.Lock()

    def __call__(self, ids: list[int]) -> None:
        with self.lock:
            self.calls.append((time.monotonic(), list(ids)))


def test_one_upload_is_scanned_once_uploads_pause() -> None:
    scans = Recorder()
    queue = RescanQueue(delay=0.3, max_wait=5.0, scan=scans)
    start = time.monotonic()
    queue.add([7])
    assert queue.wait_idle(10)
    assert [ids for _, ids in scans.calls] == [[7]]
    assert 0.3 <= scans.calls[0][0] - start < 4.0  # the pause, not max_wait


def test_continuous_uploads_are_scanned_within_max_wait() -> None:
    scans = Recorder()
    queue = RescanQueue(delay=0.5, max_wait=1.0, scan=scans)
    start = time.monotonic()
    sent: list[int] = []
    for n in range(40):  # an upload every 0.1 s for 4 s: never a 0.5 s pause
        queue.add([n])
        sent.append(n)
        time.sleep(0.1)
    assert queue.wait_idle(10)
    first_at = scans.calls[0][0] - start
    assert 1.0 <= first_at < 3.0, first_at  # max_wait, well before the uploads stopped
    assert len(scans.calls) >= 2
    scanned = [n for _, ids in scans.calls for n in ids]
    assert sorted(scanned) == sent  # every one, once: nothing lost between two rescans


def test_a_full_batch_is_scanned_without_waiting() -> None:
    scans = Recorder()
    queue = RescanQueue(delay=30.0, max_wait=60.0, scan=scans)
    start = time.monotonic()
    queue.add(list(range(BATCH_SIZE)))
    assert queue.wait_idle(20)
    assert scans.calls[0][0] - start < 10.0
    assert scans.calls[0][1] == list(range(BATCH_SIZE))


def test_a_failing_scan_does_not_stop_the_queue() -> None:
    done: list[list[int]] = []

    def scan(ids: list[int]) -> None:
        if ids == [1]:
            raise RuntimeError("database unavailable")
        done.append(ids)

    queue = RescanQueue(delay=0.1, max_wait=1.0, scan=scan)
    queue.add([1])
    assert queue.wait_idle(10)
    queue.add([2])
    assert queue.wait_idle(10)
    assert done == [[2]]
