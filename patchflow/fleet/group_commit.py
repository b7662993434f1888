"""Agent uploads stored together: one transaction and a few statements per table for up to
MAX_BATCH uploads (`store_uploads`), instead of those statements and a commit each.

On MariaDB each commit is a round trip and a log flush. On SQLite (one writer at a time whatever
we do) each statement hands the GIL over and must win it back from the threads validating other
uploads, up to a switch interval each: a batch pays that once for many uploads, where one
transaction each made the writer queue the p99 tail.

One writer thread per database writes what waits, batch after batch, and leaves after a few idle
seconds. A request on the event loop awaits its upload without a thread of its own (a batch's
requests are woken by one call into their loop); a caller on a thread blocks on a lock of its
own. Under a burst of changes sent as `PATCH`, a worker thread per request, each woken by every
batch to find whether its own was in it, took about a tenth of the server's GIL time (py-spy);
without them, changes went from 481/s to 646-694/s on SQLite (bench.agent_api:
docs/benchmarks.md, tenth pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass

from models.base import utcnow
from models.db import get_engine
from patchflow.fleet.agent_cache import CachedAgent, digest_fresh
from patchflow.fleet.inventories import (
    Change,
    Sighting,
    Touch,
    Write,
    store_uploads,
    touched,
)
from patchflow.fleet.inventory import Inventory, InventoryDelta
from patchflow.fleet.transactions import HeldConnection, write_transaction

IDLE_SECONDS = 5.0  # a writer thread with nothing to write for this long ends
HOLD_SECONDS = 1.0  # and after this long gives back the connection it holds (HeldConnection)


@dataclass(eq=False)
class _Pending:
    """An upload waiting for the writer, and how to wake its owner: a thread's `signal` (held
    until the upload is done), or a request's `future` on its `loop`."""

    upload: Write
    signal: threading.Lock | None = None
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[None] | None = None
    error: BaseException | None = None


class InventoryBatcher:
    """The uploads waiting for one database, and its writer thread. If a batch fails, its
    uploads are stored one by one, so one bad upload fails alone."""

    MAX_BATCH = 32

    def __init__(self, url: str | None) -> None:
        self.url = url
        self._cond = threading.Condition()
        self._queue: list[_Pending] = []
        self._writer: threading.Thread | None = None

    def store(self, upload: Write) -> None:
        """Stored and committed on return; raises what storing it raised."""
        signal = threading.Lock()
        signal.acquire()
        mine = _Pending(upload, signal=signal)
        self._submit(mine)
        signal.acquire()  # released by the writer once it is done
        if mine.error is not None:
            raise mine.error

    async def store_async(self, upload: Write) -> None:
        """`store` for a caller on an event loop, which goes on serving meanwhile."""
        loop = asyncio.get_running_loop()
        mine = _Pending(upload, loop=loop, future=loop.create_future())
        self._submit(mine)
        assert mine.future is not None
        # Shielded: a request cancelled meanwhile (its client gone) leaves the upload to the
        # writer, which completes the future whatever happened to the request.
        await asyncio.shield(mine.future)
        if mine.error is not None:
            raise mine.error

    def _submit(self, pending: _Pending) -> None:
        with self._cond:
            self._queue.append(pending)
            if self._writer is None:
                self._start()
            else:
                self._cond.notify()

    def _start(self) -> None:
        self._writer = threading.Thread(target=self._write_all, daemon=True,
                                        name="patchflow-inventory-writer")
        self._writer.start()

    def _write_all(self) -> None:
        held = HeldConnection(self.url)
        try:
            while True:
                with self._cond:
                    busy = self._cond.wait_for(lambda: self._queue, timeout=HOLD_SECONDS)
                if not busy:
                    held.release()  # a lull: the connection and its pool slot go back
                with self._cond:
                    if not self._cond.wait_for(lambda: self._queue,
                                               timeout=max(0.0, IDLE_SECONDS - HOLD_SECONDS)):
                        return
                    batch = self._queue[:self.MAX_BATCH]
                    del self._queue[:self.MAX_BATCH]
                try:
                    self._write(batch, held)
                except BaseException as exc:  # not an Exception: _write keeps those per upload
                    for pending in batch:
                        pending.error = exc
                    raise
                finally:
                    _wake(batch)
        finally:
            held.release()
            with self._cond:
                self._writer = None  # under the lock: the next upload starts another
                if self._queue:  # arrived as this one was ending
                    self._start()

    def _write(self, batch: list[_Pending], held: HeldConnection) -> None:
        try:
            write_transaction(self.url, lambda session: store_uploads(
                session, [p.upload for p in batch]), held)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            for pending in batch:
                try:
                    write_transaction(self.url, lambda session, p=pending: store_uploads(
                        session, [p.upload]))
                except Exception as single:
                    pending.error = single


def _wake(batch: list[_Pending]) -> None:
    """Each waiting thread by its own lock, and each event loop's requests by one call."""
    on_loops: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for pending in batch:
        if pending.signal is not None:
            pending.signal.release()
        elif pending.loop is not None and pending.future is not None:
            on_loops.setdefault(pending.loop, []).append(pending.future)
    for loop, futures in on_loops.items():
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_resolve, futures)


def _resolve(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


_BATCHERS: dict[str, InventoryBatcher] = {}
_BATCHERS_LOCK = threading.Lock()


def _batcher(url: str) -> InventoryBatcher:
    batcher = _BATCHERS.get(url)
    if batcher is None:
        with _BATCHERS_LOCK:
            batcher = _BATCHERS.setdefault(url, InventoryBatcher(url))
    return batcher


def store_agent_inventory(url: str, doc: Inventory, endpoint_id: int, sighting: Sighting,
                          digest: str | None) -> None:
    """An agent's upload, committed on return, stored together with the uploads arriving
    meanwhile."""
    _batcher(url).store((doc, endpoint_id, sighting, digest))


async def store_agent_inventory_async(url: str, doc: Inventory, endpoint_id: int,
                                     sighting: Sighting, digest: str | None) -> None:
    """`store_agent_inventory` awaited on an event loop."""
    await _batcher(url).store_async((doc, endpoint_id, sighting, digest))


def store_agent_delta(url: str, delta: InventoryDelta, endpoint_id: int, sighting: Sighting,
                      base: str) -> None:
    """An agent's changes against the inventory stored with digest `base`, committed on return
    in the same batches as whole uploads; Stale when they do not apply (nothing is stored)."""
    _batcher(url).store(Change(delta, endpoint_id, sighting, base))


async def store_agent_delta_async(url: str, delta: InventoryDelta, endpoint_id: int,
                                  sighting: Sighting, base: str) -> None:
    """`store_agent_delta` awaited on an event loop."""
    await _batcher(url).store_async(Change(delta, endpoint_id, sighting, base))


async def touch_unchanged(url: str, agent_id: str, entry: CachedAgent,
                          sighting: Sighting) -> None:
    """The touch of an unchanged upload that memory answers but for it (and, past
    CACHE_SECONDS, the confirmation of the digest memory holds; Stale when another worker
    stored a newer inventory meanwhile), committed with the writer's batch. In a real fleet,
    where an agent's uploads are hours apart, every unchanged upload needs both, which cost
    each a worker thread, a read and a transaction of its own."""
    started = time.monotonic()
    at = utcnow()
    confirm = None if digest_fresh(entry) else entry.inventory_sha256
    await _batcher(url).store_async(Touch(entry.endpoint_id, sighting, at, confirm))
    touched(get_engine(url), agent_id, at, sighting, started if confirm else None)
