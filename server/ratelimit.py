"""Slows down enrollment-token guessing: after N failed enrollments from one address within a
minute, that address gets 429 until the oldest failure ages out. In memory and per process: a
restart forgets, which is fine for a brake (the tokens themselves carry 256 random bits)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque


class FailureLimiter:
    def __init__(self, max_failures: int, window_seconds: float = 60.0,
                 max_addresses: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window = window_seconds
        self.max_addresses = max_addresses
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str) -> int:
        """Seconds until `address` may try again; 0 when it is not blocked."""
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(address)
            if not times:
                return 0
            self._expire(times, now)
            if len(times) < self.max_failures:
                return 0
            return max(1, int(times[0] + self.window - now + 0.999))

    def record_failure(self, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            times = self._failures.setdefault(address, deque())
            self._failures.move_to_end(address)
            self._expire(times, now)
            times.append(now)
            while len(times) > self.max_failures:
                times.popleft()
            # Bounded memory under a spray of addresses: forget the least recently failing.
            while len(self._failures) > self.max_addresses:
                self._failures.popitem(last=False)

    def reset(self) -> None:
        with self._lock:
            self._failures.clear()

    def _expire(self, times: deque[float], now: float) -> None:
        while times and times[0] <= now - self.window:
            times.popleft()
