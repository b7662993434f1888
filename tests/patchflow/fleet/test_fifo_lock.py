"""The SQLite writer queue: writers get the lock one at a time, in the order they asked."""

from __future__ import annotations

import threading
import time

from patchflow.fleet.transactions import FifoLock


def test_waiters_get_the_lock_in_arrival_order_one_at_a_time() -> None:
    lock = FifoLock()
    order: list[int] = []
    inside = 0
    most_inside = 0
    guard = threading.Lock()

    def writer(n: int) -> None:
        nonlocal inside, most_inside
        with lock:
            with guard:
                inside += 1
                most_inside = max(most_inside, inside)
            order.append(n)
            time.sleep(0.001)
            with guard:
                inside -= 1

    lock.__enter__()  # held: every writer below queues
    threads = []
    for n in range(12):
        thread = threading.Thread(target=writer, args=(n,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        while len(lock._waiters) < n + 1:  # queued before the next one starts
            assert time.monotonic() < deadline
            time.sleep(0.001)
    lock.__exit__(None, None, None)
    for thread in threads:
        thread.join(10)
    assert order == list(range(12))
    assert most_inside == 1
    with lock:  # free again: taken at once
        assert not lock._waiters
