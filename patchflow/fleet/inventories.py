"""Storing inventories: each replaces the endpoint's previous one in the caller's transaction,
then the registered hooks (the scan's fast-path rescan) run after the commit."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from sqlalchemy import (
    Engine,
    Table,
    bindparam,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import TextClause

from models import Endpoint, InstalledProgram, InstalledUpdate, InventoryPack
from models.base import utcnow
from models.bulk import (
    chunks,
    day,
    executemany_insert,
    insert_rows,
    stored_groups,
    update_rows,
)
from patchflow.errors import UserError
from patchflow.fleet.agent_cache import CachedAgent, agents_of, digest_fresh
from patchflow.fleet.errors import Stale
from patchflow.fleet.groups import group_by_name
from patchflow.fleet.inventory import Inventory, InventoryDelta, Program
from patchflow.fleet.network import Network, is_roaming
from patchflow.fleet.programs_pack import PACK_COLUMNS, changed, pack

log = logging.getLogger(__name__)

# Called after an inventory is committed, with the endpoint ids; the scan registers its fast-path
# rescan here. A failing hook is logged, never turned into a failed upload.
INVENTORY_HOOKS: list[Callable[[list[int]], None]] = []


def run_inventory_hooks(endpoint_ids: list[int]) -> None:
    if not endpoint_ids:
        return
    for hook in list(INVENTORY_HOOKS):
        try:
            hook(list(endpoint_ids))
        except Exception:
            log.exception("inventory hook %s failed", getattr(hook, "__name__", hook))


@dataclass
class Sighting:
    """Where an inventory came from: the agent's address (None for a file import)."""

    ip: str | None = None
    networks: Sequence[Network] = ()


def _endpoint_for_import(session: Session, hostname: str, group_id: int | None) -> int:
    existing = session.scalar(select(Endpoint.id).where(Endpoint.hostname == hostname))
    if existing is not None:
        if group_id is not None:
            session.execute(_UPDATE_ENDPOINT, {"endpoint": existing, "group_id": group_id})
        return existing
    endpoint = Endpoint(hostname=hostname, group_id=group_id, revoked=False, hotpatch=False,
                        pending_reboot=False, roaming=False, scan_state="Not Scanned")
    session.add(endpoint)
    session.flush()
    return endpoint.id


# A program row: endpoint_id, then what a pack keeps (in the pack's order), then the rest.
_PROGRAM_COLUMNS = ("endpoint_id", *PACK_COLUMNS, "scope", "install_date")
_PACKED = slice(1, 1 + len(PACK_COLUMNS))
_UPDATE_COLUMNS = ("endpoint_id", "kb", "installed_on")


def _program_row(endpoint_id: int, p: Program) -> tuple[Any, ...]:
    """A program as `_PROGRAM_COLUMNS` stores it (and as a stored row reads back)."""
    return (endpoint_id, p.name, p.version, p.publisher, p.product_code, p.upgrade_code, p.arch,
            p.scope, day(p.install_date))


_ENDPOINTS = cast(Table, Endpoint.__table__)
_PROGRAMS = cast(Table, InstalledProgram.__table__)
_UPDATES = cast(Table, InstalledUpdate.__table__)
_PACKS = cast(Table, InventoryPack.__table__)
# Built once: constructing these statements per upload showed up in profiles.
_UPDATE_ENDPOINT = update(_ENDPOINTS).where(_ENDPOINTS.c.id == bindparam("endpoint"))
# Storing content counts the revision up (here only, never on an unchanged upload): an
# incremental scan rescans an endpoint whose revision is not the one its last scan read.
_NEXT_REV = {"inventory_rev": _ENDPOINTS.c.inventory_rev + 1}  # every stored inventory
_STORE_ENDPOINT = _UPDATE_ENDPOINT.values(_NEXT_REV)


def ms_facts_json(doc: Inventory | InventoryDelta) -> str | None:
    """The document's Microsoft facts as stored in endpoints.ms_facts (NULL when none)."""
    if not doc.ms_facts:
        return None
    return json.dumps([f.model_dump() for f in doc.ms_facts], separators=(",", ":"))


def store_inventory(session: Session, doc: Inventory, group_id: int | None = None) -> int:
    """Replace the inventory of the endpoint `doc` names (created if new) with `doc`, inside the
    caller's transaction: a file import. Agent uploads go through `store_agent_inventory`, by
    endpoint id, since an agent's endpoint keeps its name whatever host name it reports. No
    digest is stored, so the agent's next upload is stored whole whatever it names."""
    endpoint_id = _endpoint_for_import(session, doc.hostname, group_id)
    store_many(session, [(doc, endpoint_id, None, None)])
    return endpoint_id


def _endpoint_values(doc: Inventory | InventoryDelta, sighting: Sighting | None, digest: str | None,
                     now: dt.datetime) -> dict[str, Any]:
    values: dict[str, Any] = {
        # An agent's document names the host as the machine sees it now. It is recorded, never
        # applied: the endpoint's name is its identity, changed only by (re-)enrolment rules.
        "reported_hostname": doc.hostname,
        "domain": doc.domain,
        "os_name": doc.os.name,
        "os_display_version": doc.os.display_version,
        "os_build": doc.os.build,
        "os_ubr": doc.os.ubr,
        "os_arch": doc.os.arch,
        "os_language": doc.os.language,
        "hotpatch": doc.os.hotpatch,
        "installation_type": doc.os.installation_type,
        "ms_facts": ms_facts_json(doc),
        "pending_reboot": doc.pending_reboot,
        "inventory_at": now,
        "collected_at": doc.collected_at or now,
        # The agent's canonical digest of this document (None for a file import: the next
        # agent upload is then stored whatever it names).
        "inventory_sha256": digest,
    }
    if sighting is not None and sighting.ip is not None:
        values.update(last_seen=now, last_ip=sighting.ip,
                      roaming=is_roaming(sighting.ip, sighting.networks))
    elif sighting is None:
        values["last_seen"] = doc.collected_at or now
    return values


Upload = tuple[Inventory, int, "Sighting | None", "str | None"]


def _update_endpoints(session: Session, values: dict[int, dict[str, Any]],
                      new_inventory: bool = True) -> None:
    """Each endpoint's row gets its values (`values` in id order: the lock order), and with
    `new_inventory` the next inventory revision (what makes the next scan evaluate it).

    On MariaDB in one UPDATE per set of columns (`models.bulk.update_rows`: a batch has one
    set), where PyMySQL's executemany would send one statement each. On SQLite one executemany
    per set of columns: the sqlite3 driver loops in C, where that CASE statement made changed
    uploads slower (bench.agent_api: 184-266/s against 259-300/s) and one execute per
    endpoint went through SQLAlchemy's statement path each (a quarter of applying a batch of
    changes, cProfile)."""
    if session.get_bind().dialect.name != "mysql":
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}  # a batch has one set
        for endpoint_id, row in values.items():
            by_columns.setdefault(tuple(row), []).append({"endpoint": endpoint_id, **row})
        for rows in by_columns.values():
            session.execute(_STORE_ENDPOINT if new_inventory else _UPDATE_ENDPOINT, rows)
        return
    update_rows(session, _ENDPOINTS, values, same=_NEXT_REV if new_inventory else None)


def store_many(session: Session, uploads: Sequence[Upload]) -> None:
    """Replace the inventories of several endpoints in the caller's transaction. An endpoint
    named twice gets its last document, as if they had been stored one after the other.

    Only the rows that differ are written: a changed inventory usually differs from the stored
    one in a program or two, and rewriting all 200 rows was most of the database's work per
    upload (on MariaDB ~5 ms of InnoDB time per upload, deleting and inserting index entries).
    The stored rows are read back in one statement per table; the endpoint row, updated first,
    holds its lock until the commit, so a concurrent store of the same endpoint (another
    worker) waits and then reads what this one committed."""
    now = utcnow()
    latest = {endpoint_id: (doc, sighting, digest)
              for doc, endpoint_id, sighting, digest in uploads}
    ids = sorted(latest)  # one lock order for every batch: no deadlock between two of them
    _update_endpoints(session, {endpoint_id: _endpoint_values(*latest[endpoint_id], now)
                                for endpoint_id in ids})
    programs = {endpoint_id: [_program_row(endpoint_id, p) for p in latest[endpoint_id][0].programs]
                for endpoint_id in ids}
    _replace_rows(session, _PROGRAM_ROWS, programs)
    _replace_rows(session, _UPDATE_ROWS, {
        endpoint_id: [(endpoint_id, u.kb, day(u.installed_on))
                      for u in latest[endpoint_id][0].unique_updates()]
        for endpoint_id in ids})
    # What a scan reads of those rows, in the document's order: patchflow.fleet.programs_pack.
    session.execute(delete(_PACKS).where(_PACKS.c.endpoint_id.in_(ids)))
    executemany_insert(session, _PACKS, ("endpoint_id", "programs"), [
        (endpoint_id, pack(row[_PACKED] for row in programs[endpoint_id])) for endpoint_id in ids
    ])


@dataclass(frozen=True)
class _Rows:
    """One of an endpoint's row tables as `_replace_rows` rewrites it."""

    table: Table
    columns: tuple[str, ...]  # as inserted: endpoint_id, then the values compared
    surrogate: bool  # rows are deleted by their `id`; else by (endpoint_id, first value)


_PROGRAM_ROWS = _Rows(_PROGRAMS, _PROGRAM_COLUMNS, surrogate=True)
_UPDATE_ROWS = _Rows(_UPDATES, _UPDATE_COLUMNS, surrogate=False)  # key: (endpoint_id, kb)


def _replace_rows(session: Session, rows: _Rows,
                  wanted: dict[int, list[tuple[Any, ...]]]) -> None:
    """Make each endpoint's stored rows equal to its wanted rows (as a multiset): the rows
    stored and wanted alike stay, the others are deleted, the missing ones inserted."""
    read = ("id", *rows.columns[1:]) if rows.surrogate else rows.columns[1:]
    stored = stored_groups(session, rows.table, "endpoint_id", list(wanted), read)
    unknown: list[int] = []
    doomed: list[Any] = []
    added: list[tuple[Any, ...]] = []
    for endpoint_id, new in wanted.items():
        have = stored.get(endpoint_id, [])
        if have is None:  # not readable whole: replace them all
            unknown.append(endpoint_id)
            added.extend(new)
            continue
        pool: dict[tuple[Any, ...], list[Any]] = {}
        for row in have:  # the values compared, and what names the row for a DELETE
            pool.setdefault(tuple(row[1:]) if rows.surrogate else tuple(row), []).append(row[0])
        for row in new:
            same = pool.get(row[1:])
            if same:
                same.pop()
            else:
                added.append(row)
        doomed.extend((key if rows.surrogate else (endpoint_id, key))
                      for keys in pool.values() for key in keys)
    table = rows.table
    if unknown:
        session.execute(delete(table).where(table.c.endpoint_id.in_(unknown)))
    for chunk in chunks(doomed):
        if rows.surrogate:
            session.execute(delete(table).where(table.c.id.in_(chunk)))
        else:
            session.execute(delete(table).where(
                tuple_(table.c.endpoint_id, table.c[rows.columns[1]]).in_(chunk)))
    insert_rows(session, table, rows.columns, added)


# --- changes against the stored inventory (PATCH) ------------------------------------------------


@dataclass(frozen=True)
class Change:
    """An agent's inventory sent as changes (`InventoryDelta`) against the stored one whose
    digest is `base`."""

    delta: InventoryDelta
    endpoint_id: int
    sighting: Sighting
    base: str


_STALE = "upload the whole inventory (PUT)"
# Built once, IN lists as expanding parameters: building and compiling them per batch was a
# tenth of applying it.
_IDS = bindparam("ids", expanding=True)
# What an upload reports that rarely changes: a change writes these only when they differ
# (rewriting all of them made MariaDB's UPDATE of a batch's endpoint rows twice as long).
_REPORTED = ("reported_hostname", "domain", "os_name", "os_display_version", "os_build",
             "os_ubr", "os_arch", "os_language", "hotpatch", "installation_type", "ms_facts",
             "pending_reboot", "last_ip", "roaming")
# Endpoint rows and packs in one statement: on MariaDB each statement is a round trip, and
# the writer then waits to win the GIL back.
_STORED_ENDPOINTS = (select(_ENDPOINTS.c.id, _ENDPOINTS.c.inventory_sha256, _PACKS.c.programs,
                            *(_ENDPOINTS.c[name] for name in _REPORTED))
                     .outerjoin(_PACKS, _PACKS.c.endpoint_id == _ENDPOINTS.c.id)
                     .where(_ENDPOINTS.c.id.in_(_IDS)).with_for_update())
# A batch names a few endpoints of the fleet, so their index is always the way in; MariaDB's
# planner chose a table scan when they were a quarter of a small table (64 endpoints, bench).
_PROGRAMS_NAMED = (select(_PROGRAMS.c.id, *(_PROGRAMS.c[name] for name in _PROGRAM_COLUMNS))
                   .with_hint(_PROGRAMS, "FORCE INDEX (ix_installed_programs_endpoint_name)",
                              "mysql")
                   .where(_PROGRAMS.c.endpoint_id.in_(_IDS),
                          _PROGRAMS.c.name.in_(bindparam("names", expanding=True))))
_DELETE_PROGRAMS = delete(_PROGRAMS).where(_PROGRAMS.c.id.in_(_IDS))


@functools.lru_cache(maxsize=64)
def _replace_packs(count: int) -> TextClause:
    """One statement that writes `count` packs over the stored ones (REPLACE: SQLite and
    MariaDB alike; bytes bound, so not `insert_rows`), built once: a multi-row
    `insert().values()` was compiled again at every batch."""
    rows = ", ".join(f"(:e{i}, :p{i})" for i in range(count))
    return text(f"REPLACE INTO {_PACKS.name} (endpoint_id, programs) VALUES {rows}")


def apply_changes(session: Session, changes: Sequence[Change]) -> None:
    """Apply each change to its endpoint's stored inventory in the caller's transaction, or
    raise Stale (the caller rolls back): the stored digest is not the change's base, a removed
    program or KB is not stored, or the counts the agent computed from its whole document do
    not come out. Only the rows named are read and written, in a few statements for the whole
    batch: this is what makes a changed inventory cheap, where storing it whole parses and
    compares every program.

    All of it runs in the writer's transaction, reads included. On SQLite, reading in the
    uploads' own threads first was slower, not faster: every other connection's page cache is
    invalidated by each commit, so those reads went to the file (bench.agent_api: 166-184/s
    against 438-476/s). An endpoint changed twice in one batch (an agent's retry) gets its
    changes in order, in rounds."""
    rounds: list[dict[int, Change]] = []
    for change in changes:
        free = next((r for r in rounds if change.endpoint_id not in r), None)
        if free is None:
            free = {}
            rounds.append(free)
        free[change.endpoint_id] = change
    now = utcnow()
    for batch in rounds:
        ids = sorted(batch)  # the lock order of store_many
        # Compare-and-set: the rows read under a row lock (MariaDB; SQLite's writer is
        # alone), then written with what changed.
        stored = {row.id: row._mapping for row in session.execute(_STORED_ENDPOINTS,
                                                                  {"ids": ids})}
        values: dict[int, dict[str, Any]] = {}
        for endpoint_id in ids:
            change, row = batch[endpoint_id], stored.get(endpoint_id)
            if row is None or row["inventory_sha256"] != change.base:
                raise Stale("the stored inventory is not the one these changes are against: "
                            + _STALE)
            values[endpoint_id] = {
                name: value for name, value in _endpoint_values(
                    change.delta, change.sighting, change.delta.digest, now).items()
                if name not in _REPORTED or row[name] != value}
        _update_endpoints(session, values)
        deltas = {endpoint_id: batch[endpoint_id].delta for endpoint_id in ids}
        _change_programs(session, deltas, {e: row["programs"] for e, row in stored.items()})
        _change_updates(session, {endpoint_id: delta for endpoint_id, delta in deltas.items()
                                  if delta.updates_removed or delta.updates_added})


def _change_programs(session: Session, deltas: dict[int, InventoryDelta],
                     packs: dict[int, bytes | None]) -> None:
    """Delete the removed rows, insert the added ones, and change each stored pack (`packs`)
    to match (`programs_pack.changed`: usually a frame appended, the pack not decoded)."""
    ids = list(deltas)
    removed = {endpoint_id: [_program_row(endpoint_id, p) for p in delta.programs_removed]
               for endpoint_id, delta in deltas.items()}
    pool: dict[tuple[Any, ...], list[int]] = {}
    owners = [endpoint_id for endpoint_id in ids if removed[endpoint_id]]
    for chunk in chunks(sorted({row[1] for rows in removed.values() for row in rows})):
        for row in session.execute(_PROGRAMS_NAMED, {"ids": owners, "names": chunk}):
            pool.setdefault((*row[1:-1], day(row[-1])), []).append(row[0])
    doomed: list[int] = []
    added: list[tuple[Any, ...]] = []
    repacked: dict[str, Any] = {}
    for endpoint_id, delta in deltas.items():
        for row in removed[endpoint_id]:
            found = pool.get(row)
            if not found:
                raise Stale(f"program {row[1]!r} {row[2] or ''} is not in the stored "
                            "inventory: " + _STALE)
            doomed.append(found.pop())
        new = [_program_row(endpoint_id, p) for p in delta.programs_added]
        try:
            programs, count = changed(packs.get(endpoint_id),
                                      [row[_PACKED] for row in removed[endpoint_id]],
                                      [row[_PACKED] for row in new])
        except ValueError:
            raise Stale("the stored programs are not readable with these changes: "
                        + _STALE) from None
        if count != delta.program_count:
            raise Stale(f"the changes leave {count} programs, not the "
                        f"{delta.program_count} the agent counted: " + _STALE)
        added.extend(new)
        index = len(repacked) // 2
        repacked.update({f"e{index}": endpoint_id, f"p{index}": programs})
    for chunk in chunks(doomed):
        session.execute(_DELETE_PROGRAMS, {"ids": chunk})
    insert_rows(session, _PROGRAMS, _PROGRAM_COLUMNS, added)
    # One statement, whatever the batch: on SQLite every statement hands the GIL over.
    session.execute(_replace_packs(len(ids)), repacked)


def _change_updates(session: Session, deltas: dict[int, InventoryDelta]) -> None:
    """Delete the removed KBs and those whose date changed, insert the added and changed ones,
    then check each endpoint's count. (The count of an endpoint whose KBs the change leaves
    alone is not read: the base digest names the stored KBs.)"""
    if not deltas:
        return
    key = tuple_(_UPDATES.c.endpoint_id, _UPDATES.c.kb)
    wanted = sorted({(endpoint_id, kb) for endpoint_id, delta in deltas.items()
                     for kb in (*delta.updates_removed, *(u.kb for u in delta.updates_added))})
    stored: set[tuple[int, str]] = set()
    for chunk in chunks(wanted):
        stored.update((int(e), kb) for e, kb in session.execute(
            select(_UPDATES.c.endpoint_id, _UPDATES.c.kb).where(key.in_(chunk))))
    for endpoint_id, delta in deltas.items():
        missing = sorted(kb for kb in delta.updates_removed if (endpoint_id, kb) not in stored)
        if missing:
            raise Stale(f"{missing[0]} is not in the stored inventory: " + _STALE)
    for chunk in chunks(sorted(stored)):
        session.execute(delete(_UPDATES).where(key.in_(chunk)))
    insert_rows(session, _UPDATES, _UPDATE_COLUMNS, [
        (endpoint_id, u.kb, day(u.installed_on)) for endpoint_id, delta in deltas.items()
        for u in {u.kb: u for u in delta.updates_added}.values()])
    counts = dict(session.execute(
        select(_UPDATES.c.endpoint_id, func.count()).where(
            _UPDATES.c.endpoint_id.in_(list(deltas))).group_by(_UPDATES.c.endpoint_id)).all())
    for endpoint_id, delta in deltas.items():
        if counts.get(endpoint_id, 0) != delta.update_count:
            raise Stale(f"the changes leave {counts.get(endpoint_id, 0)} KBs, not the "
                        f"{delta.update_count} the agent counted: " + _STALE)


@dataclass(frozen=True)
class Touch:
    """An unchanged upload's mark on its endpoint: the agent confirmed the stored inventory
    at `at` (inventory_at, which the patch cycle's verification waits for) from where its
    sighting says. No new revision: there is nothing new to scan. With `confirm`, the digest
    memory read more than CACHE_SECONDS ago, which must still be the stored one (another
    worker may have stored a newer inventory): read under a row lock first, Stale if not."""

    endpoint_id: int
    sighting: Sighting
    at: dt.datetime
    confirm: str | None = None


_DIGESTS = (select(_ENDPOINTS.c.id, _ENDPOINTS.c.inventory_sha256)
            .where(_ENDPOINTS.c.id.in_(_IDS)).with_for_update())


def _confirm_digests(session: Session, touches: Sequence[Touch]) -> None:
    """Stale unless every touch's endpoint still stores the digest it confirms (the batch is
    then stored one upload at a time, and only the stale one fails)."""
    if not touches:
        return
    stored = dict(session.execute(
        _DIGESTS, {"ids": sorted({t.endpoint_id for t in touches})}).tuples().all())
    if any(stored.get(t.endpoint_id) != t.confirm for t in touches):
        raise Stale("the stored inventory changed since memory read it: " + _STALE)


def _touch_values(sighting: Sighting, at: dt.datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"inventory_at": at, "last_seen": at}
    if sighting.ip is not None:
        values.update(last_ip=sighting.ip, roaming=is_roaming(sighting.ip, sighting.networks))
    return values


Write = Upload | Change | Touch  # what the inventory writer writes (group_commit)


def store_uploads(session: Session, uploads: Sequence[Write]) -> None:
    """A batch of whole inventories, changes and unchanged uploads' touches, in the caller's
    transaction (a kind absent sends no statement)."""
    whole = [u for u in uploads if isinstance(u, tuple)]
    changes = [u for u in uploads if isinstance(u, Change)]
    touches = sorted((u for u in uploads if isinstance(u, Touch)), key=lambda t: t.endpoint_id)
    if whole:
        store_many(session, whole)
    if changes:
        apply_changes(session, changes)
    if touches:
        _confirm_digests(session, [t for t in touches if t.confirm is not None])
        # An endpoint touched twice keeps its last touch.
        _update_endpoints(session, {t.endpoint_id: _touch_values(t.sighting, t.at)
                                    for t in touches}, new_inventory=False)


def import_inventories(
    session: Session, docs: Sequence[Inventory], group: str | None = None
) -> list[int]:
    """Store documents from one import file in the caller's transaction: all or nothing."""
    group_id = group_by_name(session, group).id if group else None
    seen: set[str] = set()
    ids: list[int] = []
    for doc in docs:
        if doc.hostname in seen:
            raise UserError(f"host {doc.hostname} appears twice in one import")
        seen.add(doc.hostname)
        ids.append(store_inventory(session, doc, group_id=group_id))
    return ids


# --- unchanged inventories ---------------------------------------------------------------------

# An unchanged upload rewrites inventory_at and last_seen (one row, one UPDATE) at most this
# often. Short on purpose: the cycle's verification and the install flow wait for an inventory
# received after an install finished, and an agent reports right after its results.
UNCHANGED_TOUCH = dt.timedelta(seconds=1)
_COUNT_PROGRAMS = (select(func.count()).select_from(_PROGRAMS)
                   .where(_PROGRAMS.c.endpoint_id == bindparam("endpoint")))
_COUNT_UPDATES = (select(func.count()).select_from(_UPDATES)
                  .where(_UPDATES.c.endpoint_id == bindparam("endpoint")))
_HEX = frozenset("0123456789abcdef")


def requested_digest(header: str | None) -> str | None:
    """The digest an `If-None-Match: "<sha256>"` header names (the first tag of a list; weak or
    not), or None for anything else: an unusable header is ignored, never an error."""
    if not header:
        return None
    tag = header.split(",", 1)[0].strip().removeprefix("W/").strip('"').lower()
    return tag if len(tag) == 64 and set(tag) <= _HEX else None


def body_digest(body: bytes) -> str | None:
    """The canonical digest of an accepted body, computed here rather than taken from the
    header, so a wrong header can never mark a different inventory as the stored one."""
    # orjson parses several times faster than json. Where the two parsers disagree (NaN,
    # numbers beyond 64 bits, which orjson turns into floats) the model has already refused
    # the body; what orjson refuses still gets the stdlib's answer below.
    try:
        return _canonical_digest(orjson.loads(body))
    except orjson.JSONDecodeError:
        pass
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return _canonical_digest(doc)


def _canonical_digest(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return None
    # The same canonical text as the agent's json.dumps(sort_keys, compact, UTF-8), ten times
    # faster. Should the two ever differ, the digests do not match and every upload is stored
    # whole: slower, never wrong.
    doc.pop("collected_at", None)
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()


def unchanged_ack(entry: CachedAgent, digest: str | None,
                  now: dt.datetime) -> dict[str, Any] | None:
    """The answer to an unchanged upload when memory alone gives it (no count to read, no
    touch due); else None."""
    if (not _names_stored(entry, digest) or entry.counts is None or not digest_fresh(entry)
            or _unchanged_touch_due(entry, now)):
        return None
    return _ack(entry, entry.counts)


def unchanged_inventory(engine: Engine, agent_id: str, entry: CachedAgent, digest: str | None,
                        sighting: Sighting) -> dict[str, Any] | None:
    """Answer an upload of the inventory already stored: no parsing, no rows rewritten; only
    inventory_at/last_seen, at most every UNCHANGED_TOUCH. None: it did change."""
    if not _names_stored(entry, digest):
        return None
    cache = agents_of(engine)
    counts = entry.counts
    now = utcnow()
    due = _unchanged_touch_due(entry, now)
    if counts is None or due:
        with engine.begin() as conn:
            if counts is None:
                counts = (int(conn.execute(_COUNT_PROGRAMS, {"endpoint": entry.endpoint_id})
                              .scalar_one()),
                          int(conn.execute(_COUNT_UPDATES, {"endpoint": entry.endpoint_id})
                              .scalar_one()))
            if due:
                conn.execute(_UPDATE_ENDPOINT, {"endpoint": entry.endpoint_id,
                                                **_touch_values(sighting, now)})
        if due:
            touched(engine, agent_id, now, sighting)
        cache.update(agent_id, counts=counts)
    return _ack(entry, counts)


def touch_answers(entry: CachedAgent, digest: str | None, now: dt.datetime) -> bool:
    """An unchanged upload that memory answers but for its touch or the confirmation of a
    digest read more than CACHE_SECONDS ago: a `Touch` does both, in the writer's batch."""
    return (_names_stored(entry, digest) and entry.counts is not None
            and (not digest_fresh(entry) or _unchanged_touch_due(entry, now)))


def touched(engine: Engine, agent_id: str, at: dt.datetime, sighting: Sighting,
            confirmed: float | None = None) -> None:
    """After a touch's commit: memory learns it, so the next upload within UNCHANGED_TOUCH is
    answered from memory alone; `confirmed`, the time.monotonic() before its digest was
    confirmed, makes the digest fresh again."""
    fresh = {} if confirmed is None else {"loaded": confirmed}
    agents_of(engine).update(agent_id, inventory_at=at, last_seen=at, last_ip=sighting.ip,
                             **fresh)


def unchanged_ack_for(entry: CachedAgent) -> dict[str, Any]:
    """The answer to an unchanged upload of an entry whose counts memory holds."""
    assert entry.counts is not None
    return _ack(entry, entry.counts)


def remember_stored(engine: Engine, agent_id: str, doc: Inventory | InventoryDelta,
                    digest: str | None, ip: str | None) -> None:
    """After the commit: what the unchanged check needs about the inventory just stored."""
    now = utcnow()
    agents_of(engine).update(
        agent_id, inventory_sha256=digest, inventory_at=now, last_seen=now, last_ip=ip,
        reported_hostname=doc.hostname,
        counts=doc.counts())


def _names_stored(entry: CachedAgent, digest: str | None) -> bool:
    """The upload names the inventory stored for this agent (a pending re-enrolment has none)."""
    return digest is not None and not entry.pending and entry.inventory_sha256 == digest


def _unchanged_touch_due(entry: CachedAgent, now: dt.datetime) -> bool:
    return entry.inventory_at is None or now - entry.inventory_at > UNCHANGED_TOUCH


def _ack(entry: CachedAgent, counts: tuple[int, int]) -> dict[str, Any]:
    return {"hostname": entry.hostname,
            "reported_hostname": entry.reported_hostname or entry.hostname,
            "programs": counts[0], "updates": counts[1], "unchanged": True}
