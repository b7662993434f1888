"""Python's cyclic garbage collector held off while a scan batch runs.

A batch allocates hundreds of thousands of containers (the driver's row tuples, each endpoint's
unpacked program lists, pandas' object columns) and frees them by reference counting: the
batch makes no cycles worth collecting. Yet every 700 allocations the collector ran, and a
young pandas object column makes even a young-generation pass visit each of its values: a
3.8 s scan of 10,000 endpoints on SQLite spent 0.43 s in 494 collections (gc.callbacks), most
of it inside the reads. Held off (`python -m bench.scan --endpoints 10000 --database sqlite
--no-flow --no-incremental`, alternating runs): 3.41 and 3.39 s against 3.89 and 3.85 s, the
read 1.06 s against 1.38 s. Whatever cyclic garbage a batch leaves is collected after it, by
the first collection once the collector runs again.

The collector is process-wide: it stays off while any batch of the process runs (a flow's
batches on threads, a server's background rescans) and comes back after the last one, unless
something else had switched it off before.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_running = 0
_restore = False


@contextmanager
def collector_paused() -> Iterator[None]:
    global _running, _restore
    with _lock:
        if _running == 0:
            _restore = gc.isenabled()
            gc.disable()
        _running += 1
    try:
        yield
    finally:
        with _lock:
            _running -= 1
            if _running == 0 and _restore:
                gc.enable()
