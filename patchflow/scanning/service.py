"""The scanning service: selecting endpoints, scan records, the fast path, and the explanation
of one (endpoint, patch) verdict.

`scan_now` is the fast path for a single inventory upload (no flow start-up): it reuses a
catalog cached in-process until a sync changes it. The `scan` flow (flows/scan.py) uses the same
pieces in batches. `explain_pair` is what `patchflow missing --explain` prints, so an entry
point never reaches into the engine or the scan store to say why a patch is missing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session

from applicability.engine import explain as replay_rules
from applicability.engine import scan as run_engine
from models import Endpoint, MissingPatch, Patch, Policy, Scan
from models.base import utcnow
from models.bulk import chunks
from models.db import get_engine, session_scope
from models.enums import ScanState
from patchflow.catalog.catalog_query import find_patch
from patchflow.catalog.vuln_query import load_intel, rate
from patchflow.errors import UserError, one_line
from patchflow.fleet.endpoints import get_endpoint
from patchflow.fleet.groups import group_ids
from patchflow.fleet.transactions import queued_write, read_committed, serialized_writes
from patchflow.fleet.tree import Tree
from patchflow.ops import childproc
from patchflow.scanning import basis_store
from patchflow.scanning.collector import collector_paused
from patchflow.scanning.scan_store import (
    BatchCounts,
    Catalog,
    catalog_version,
    frames_for,
    load_catalog,
    read_batch,
)
from patchflow.scanning.scan_store import write_results as _write

log = logging.getLogger(__name__)
BATCH_SIZE = 2000


@dataclass
class Selection:
    endpoints: list[str] | None = None
    group: str | None = None
    policy: str | None = None
    all: bool = False

    def describe(self) -> str:
        if self.endpoints:
            return "endpoints " + ",".join(self.endpoints)
        if self.group:
            return f"group {self.group}"
        if self.policy:
            return f"policy {self.policy}"
        return "all endpoints"


def select_endpoints(session: Session, sel: Selection) -> list[int]:
    chosen = [bool(sel.endpoints), bool(sel.group), bool(sel.policy), sel.all]
    if sum(chosen) != 1:
        raise UserError("choose exactly one of --endpoints, --group, --policy and --all")
    # Revoked endpoints and re-enrolments awaiting approval are never scanned.
    active = select(Endpoint.id, Endpoint.hostname, Endpoint.group_id).where(
        Endpoint.revoked.is_(False), Endpoint.replaces_endpoint_id.is_(None))
    if sel.endpoints:
        rows = session.execute(active.where(Endpoint.hostname.in_(sel.endpoints))).all()
        found = {r.hostname for r in rows}
        unknown = [h for h in sel.endpoints if h not in found]
        if unknown:
            raise UserError(f"unknown endpoint {unknown[0]!r}")
        return sorted(r.id for r in rows)
    if sel.group:
        ids = group_ids(session, sel.group, subgroups=True)
        return list(session.scalars(
            active.with_only_columns(Endpoint.id).where(Endpoint.group_id.in_(ids))
            .order_by(Endpoint.id)))
    if sel.policy:
        policy = session.scalar(select(Policy).filter_by(name=sel.policy))
        if policy is None:
            raise UserError(f"no policy named {sel.policy!r}")
        tree = Tree.load(session)
        return sorted(r.id for r in session.execute(active)
                      if tree.effective_policy(r.group_id) == policy.id)
    return list(session.scalars(active.with_only_columns(Endpoint.id).order_by(Endpoint.id)))


def batches(ids: list[int], size: int = BATCH_SIZE) -> list[list[int]]:
    return list(chunks(ids, size))


def batches_at_once(url: str | None = None) -> int:
    """How many of a scan's batches one process runs at a time. Two on MariaDB: much of a
    batch's write is the database server's work (another process, so another core), which
    then overlaps the next batch's evaluation here: 10,000 endpoints in 3.3-3.5 s against
    3.8-4.3 s one at a time, 100,000 in 31.5-32.2 s against 37.3-39.4 s, for 7-10% more CPU
    time (docs/benchmarks.md). One on SQLite, whose work runs in this process: a second
    thread only contends for the interpreter and the one writer."""
    return 2 if get_engine(url).dialect.name == "mysql" else 1


_OWNER = re.compile(r"running in process (\d+) on (.+)")


def close_dead_scans(session: Session) -> int:
    """Close the scans whose process died without finishing them (SIGKILL, power cut).

    A running scan's message names its process and host; a scan of this host whose process is
    gone is marked failed, else it would say "running" forever. Its batch in flight was rolled
    back whole, so when no live scan remains, endpoints left "Scanning" get back the state their
    intact previous results imply. Deployment runs are also closed by their crash hooks, and
    flow runs whose process died by `serve` at start (deployments/orphans.py, the same
    `childproc.ended` check)."""
    running = list(session.scalars(select(Scan).where(Scan.status == "running")))
    dead = [s for s in running if (m := _OWNER.fullmatch(s.message or ""))
            and childproc.ended(m[2], int(m[1]))]
    for scan in dead:
        scan.status, scan.finished_at = "failed", utcnow()
        scan.message = (f"the scan process ended without finishing the scan ({scan.message}); "
                        "its endpoints keep their previous results")
    if dead and len(dead) == len(running):
        restore_stuck_states(session)
    return len(dead)


def restore_stuck_states(session: Session, message: str | None = None) -> None:
    """Endpoints left "Scanning" by a scan that ended without finishing get the state their
    results imply: a batch is written in one transaction, so those results are intact."""
    has_missing = exists().where(MissingPatch.endpoint_id == Endpoint.id)
    stuck = select(Endpoint.id, Endpoint.last_scan_id, has_missing.label("missing")).where(
        Endpoint.scan_state == ScanState.SCANNING)
    for endpoint_id, last_scan_id, missing in session.execute(stuck).all():
        state = (ScanState.NOT_SCANNED if last_scan_id is None else
                 ScanState.MISSING_PATCHES if missing else ScanState.UP_TO_DATE)
        session.execute(update(Endpoint).where(Endpoint.id == endpoint_id).values(
            scan_state=state, scan_state_at=utcnow(), scan_message=message))


def create_scan(session: Session, trigger: str, scope: str, total: int,
                flow_run_id: str | None = None) -> int:
    close_dead_scans(session)
    scan = Scan(trigger=trigger, scope=scope[:255], status="running", endpoints_total=total,
                flow_run_id=flow_run_id, started_at=utcnow(),
                message=f"running in process {os.getpid()} on {socket.gethostname()}"[:2000])
    session.add(scan)
    session.flush()
    return scan.id


def finish_scan(session: Session, scan_id: int, counts: BatchCounts, status: str,
                message: str | None = None, unchanged: int = 0) -> None:
    session.execute(update(Scan).where(Scan.id == scan_id).values(
        status=status, finished_at=utcnow(), endpoints_done=counts.scanned + counts.failed,
        endpoints_unchanged=unchanged,
        endpoints_missing=counts.missing_endpoints, endpoints_up_to_date=counts.up_to_date,
        endpoints_failed=counts.failed, missing_pairs=counts.pairs, message=message))


# One batch of this process reads and evaluates at a time: those are this interpreter's work,
# and two batches interleaving them each took longer (the engine's CPU time up by a fifth; by
# about 6% with this lock). What overlaps is one batch's write, mostly the database server's
# time, with the next one's read and evaluation.
_EVALUATING = threading.Lock()


def scan_batch(scan_id: int | None, endpoint_ids: list[int], catalog: Catalog) -> BatchCounts:
    """Scan one batch and write its results in one transaction; the catalog's preparation is
    built by the first batch (or taken from the cache) and shared by the others."""
    prepared = catalog.prepared
    with collector_paused(), session_scope() as session:
        # Its reads are statements apart, so an upload may commit between them. The inventory
        # revision comes first: results read partly from a newer inventory are recorded as of
        # the older revision, which the next scan then evaluates again.
        read_committed(session)
        with _EVALUATING:
            frames, basis = read_batch(session, endpoint_ids, catalog, used_by=prepared)
            result = run_engine(frames, prepared)
        with serialized_writes(session):
            counts = _write(session, scan_id, endpoint_ids, frames, result)
            basis_store.record(session, basis_store.catalog_state_id(session, catalog), basis,
                               result.touched)
            session.commit()
        return counts


_cache_lock = threading.Lock()
_cached: dict[str, Catalog] = {}


def cached_catalog(session: Session) -> Catalog:
    """The catalog, reloaded only when a sync changed it (cheap version check per call)."""
    version = catalog_version(session)
    url = str(session.get_bind().url)
    with _cache_lock:
        current = _cached.get(url)
        if current is None or current.version != version:
            current = load_catalog(session)
            _cached[url] = current
        return current


def scan_now(endpoint_ids: list[int], trigger: str = "inventory") -> BatchCounts:
    """Scan a few endpoints synchronously (after an inventory upload or an install)."""
    with session_scope() as session:
        catalog = cached_catalog(session)
        with serialized_writes(session):
            scan_id = create_scan(session, trigger, f"{len(endpoint_ids)} endpoints",
                                  len(endpoint_ids))
            session.commit()
    try:
        counts = scan_batch(scan_id, endpoint_ids, catalog)
    except Exception as exc:
        # The batch rolled back whole; the scan must not say "running" for ever (the caller
        # logs the error: the background queue, an install's rescan).
        _finish(scan_id, BatchCounts(), "failed", one_line(exc, 500))
        raise
    _finish(scan_id, counts, "completed")
    return counts


def _finish(scan_id: int, counts: BatchCounts, status: str, message: str | None = None) -> None:
    with queued_write() as session:
        finish_scan(session, scan_id, counts, status, message)


def explain_pair(session: Session, host: str, patch_ref: str) -> list[str]:
    """Why a patch is missing, or not, on one endpoint: the engine's rules replayed on the
    endpoint's current inventory and the catalog, then, for a third-party package, the pair's
    vulnerability rating. Lines of plain text (host and product names included) for the caller
    to print without markup; an unknown host or patch is a one-line NotFoundError."""
    endpoint = get_endpoint(session, host)
    patch = find_patch(session, patch_ref)
    frames = frames_for(session, [endpoint.id], load_catalog(session))
    lines = replay_rules(frames, endpoint.id, patch.id)
    if patch.package_id:
        lines = [*lines, _rating_line(session, endpoint.id, patch)]
    return lines


def _rating_line(session: Session, endpoint_id: int, patch: Patch) -> str:
    """The pair's vulnerability rating, said the way docs/vulnerabilities.md states the rule."""
    row = session.get(MissingPatch, (endpoint_id, patch.id))
    if row is None:
        return "Severity: not a missing pair in the last scan"
    rating = rate(load_intel(session), patch.package_id, row.product or patch.title,
                  row.installed_version, row.available_version or patch.version,
                  dt.datetime.now(dt.UTC).date())
    return f"Severity: {rating.explain}"


def rescan_after_inventory(endpoint_ids: list[int]) -> None:
    """INVENTORY_HOOKS entry: results are current as soon as an endpoint reports."""
    scan_now(endpoint_ids, trigger="inventory")


def register_inventory_hook(background: bool = False, database_url: str | None = None) -> None:
    """Rescan endpoints when their inventory arrives: synchronously for CLI imports, through
    the background queue in the server (an upload must not wait for a scan), whose scans run
    in a process of their own when the server's database is MariaDB (scan_process)."""
    from patchflow.fleet.inventories import INVENTORY_HOOKS
    from patchflow.scanning import scan_process

    hook = RESCANS.add if background else rescan_after_inventory
    if hook not in INVENTORY_HOOKS:
        INVENTORY_HOOKS.append(hook)
    if background and RESCANS.scan is scan_now:
        RESCANS.scan = scan_process.for_database(database_url) or scan_now


def unregister_inventory_hook(background: bool = False) -> None:
    from patchflow.fleet.inventories import INVENTORY_HOOKS
    from patchflow.scanning.scan_process import ScanProcess

    hook = RESCANS.add if background else rescan_after_inventory
    while hook in INVENTORY_HOOKS:
        INVENTORY_HOOKS.remove(hook)
    if background:
        RESCANS.wait_idle(30)
        process, RESCANS.scan = RESCANS.scan, scan_now
        if isinstance(process, ScanProcess):
            process.close()


class RescanQueue:
    """Collects endpoint ids from inventory uploads and scans them together a moment later.

    The scan starts once uploads pause for `delay` seconds, `max_wait` seconds after the first
    id at the latest, or at once when a full batch waits. Thousands of agents reporting at once
    become a few large batch scans instead of many small ones, and uploads keep the server while
    they pour in: the engine's cost per batch is mostly fixed (a 64-endpoint rescan took
    ~100 ms of CPU, a 2,000-endpoint one ~0.8 s), and a rescan every second during a burst of
    changed uploads raised their p99 by 40-55% (bench.agent_api). An endpoint's results are
    current `delay` seconds after the last upload, `max_wait` seconds under continuous load.
    """

    def __init__(self, delay: float = 1.0, max_wait: float = 5.0,
                 scan: Callable[[list[int]], object] = scan_now) -> None:
        self.delay = delay
        self.max_wait = max_wait
        self.scan = scan  # scan_now, or a scan_process.ScanProcess (the server on MariaDB)
        self._ids: set[int] = set()
        self._first_add = self._last_add = 0.0  # time.monotonic() of the first and last ids
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def add(self, endpoint_ids: list[int]) -> None:
        with self._lock:
            self._last_add = time.monotonic()
            if not self._ids:
                self._first_add = self._last_add
            self._ids.update(endpoint_ids)
            self._idle.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="rescan", daemon=True)
                self._thread.start()
        self._wake.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """For tests and shutdown: True once everything queued has been scanned."""
        return self._idle.wait(timeout)

    def _wait_for_pause(self) -> None:
        while True:
            with self._lock:
                first, last, waiting = self._first_add, self._last_add, len(self._ids)
            now = time.monotonic()
            left = min(last + self.delay, first + self.max_wait) - now
            if left <= 0 or waiting >= BATCH_SIZE:
                return
            time.sleep(min(left, self.delay / 4))

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wait_for_pause()
            with self._lock:
                ids, self._ids = sorted(self._ids), set()
                self._wake.clear()
            for batch in batches(ids):
                try:
                    self.scan(batch)
                except Exception:
                    log.exception("background rescan of %d endpoints failed", len(batch))
            with self._lock:
                if not self._ids:
                    self._idle.set()


RESCANS = RescanQueue()
