"""What the agent hot path keeps in memory: who an agent is, and which endpoints have work.

At fleet scale almost every agent request is a poll with nothing to do, or an inventory that
did not change. Answering those from memory, with no database query, is what lets one server
keep up with a hundred thousand agents. Two caches, one set per process:

- `AgentCache`: agent id → the endpoint's credentials row (secret *hash*, revoked, pending) and
  what the unchanged-inventory check needs (the stored inventory's digest, counts, last times).
  The presented secret is still hashed and compared in constant time on every request.
- `WorkIndex`: the set of endpoints with dispatched items of running jobs, read in one query
  for the whole fleet, so a poll for any other endpoint is answered without a query.

A change made in this process through a Session (revoking, approving or rejecting a
re-enrolment, dispatching, cancelling or resuming a job) is seen at once: the Session listeners
below drop what it affects after the commit (the agents of that database: caches are kept per
database URL). A change made by another process (the CLI, a second
`serve --workers` worker, a Prefect flow run) is seen within `CACHE_SECONDS`:

- credentials: the same listeners write a new random *credentials generation* (a `settings`
  row) in the transaction that changes them, and each process reads that one row about every
  `CACHE_SECONDS` (a second early while agents keep asking: server.agent_fast_path reads it
  before it expires), dropping every entry when it changed. An entry is therefore good for as long
  as no credentials changed anywhere, not for a few seconds: an agent polling once a minute is
  still answered from memory, which per-entry expiry could never do at fleet cadence;
- the stored inventory's digest (another worker may have stored a newer inventory): trusted for
  `CACHE_SECONDS` after the entry was read (`digest_fresh`);
- the work index: re-read for the whole fleet about every `CACHE_SECONDS`, the same way.
"""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Delete, Engine, Table, Update, event, inspect, select
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import ORMExecuteState, Session

from models import Endpoint, InstallJob, InstallJobItem, Setting
from models.bulk import ASSIGNED_ROWS
from models.enums import ItemState

# How long another process's revocation, approval or dispatch may go unseen here.
CACHE_SECONDS = 3.0
MAX_AGENTS = 500_000  # entries beyond this: the older half is dropped
# Endpoint columns whose change must reach the credentials cache.
AUTH_COLUMNS = frozenset({"agent_id", "secret_hash", "revoked", "hostname",
                          "replaces_endpoint_id"})
WORK_TABLES = frozenset({"install_job_items", "install_jobs"})
DISPATCHED = ItemState.DISPATCHED.value
GENERATION_KEY = "agent_cache.credentials_generation"
_SETTINGS = cast(Table, Setting.__table__)
_READ_GENERATION = select(_SETTINGS.c.value).where(_SETTINGS.c.key == GENERATION_KEY)
_T = TypeVar("_T")


@dataclass(frozen=True)
class CachedAgent:
    endpoint_id: int
    hostname: str
    secret_hash: str
    revoked: bool
    pending: bool
    last_seen: dt.datetime | None
    last_ip: str | None
    inventory_sha256: str | None
    inventory_at: dt.datetime | None
    reported_hostname: str | None
    counts: tuple[int, int] | None = None  # (programs, unique KBs) of the stored inventory
    loaded: float = 0.0  # time.monotonic() when read from the database


class AgentCache:
    def __init__(self) -> None:
        self._agents: dict[str, CachedAgent] = {}
        self._lock = threading.Lock()
        self._confirming = threading.Lock()  # one generation read at a time
        self._generation: str | None = None
        self._adopted = float("-inf")  # time.monotonic() of the last `adopt`
        self._confirmed = float("-inf")  # time.monotonic() of the last generation read
        # Counts the times every entry was dropped: a row read before a drop is not put after it.
        self.epoch = 0

    def get(self, agent_id: str) -> CachedAgent | None:
        """The entry, while the credentials generation was confirmed within CACHE_SECONDS."""
        if self.due():
            return None
        return self._agents.get(agent_id)

    def due(self, ahead: float = 0.0) -> bool:
        """Whether the generation was last confirmed more than CACHE_SECONDS - `ahead` ago."""
        return time.monotonic() - self._confirmed > CACHE_SECONDS - ahead

    def confirm(self, engine: Engine, ahead: float = 0.0) -> None:
        """Read the credentials generation when due (`ahead`: that many seconds early): one
        small query per CACHE_SECONDS for the whole fleet, by one caller while the others
        wait for its answer. When another process changed credentials, every entry goes."""
        if not self.due(ahead):
            return
        with self._confirming:
            if not self.due(ahead):  # read meanwhile by the caller this one waited for
                return
            started = time.monotonic()
            with engine.connect() as conn:
                generation = conn.execute(_READ_GENERATION).scalar()
            with self._lock:
                # A generation this process committed after the read began is newer than
                # what the read saw: the read must not undo it (and drop every agent again).
                if generation != self._generation and self._adopted < started:
                    self._drop()
                    self._generation = generation
                self._confirmed = max(self._confirmed, started)

    def put(self, agent_id: str, entry: CachedAgent, epoch: int) -> None:
        """`epoch`: `self.epoch` before the row was read."""
        with self._lock:
            if epoch != self.epoch:
                return
            if len(self._agents) >= MAX_AGENTS:
                kept = sorted(self._agents.items(), key=lambda item: item[1].loaded)
                self._agents = dict(kept[len(kept) // 2:])
            self._agents[agent_id] = entry

    def update(self, agent_id: str, **changes: Any) -> None:
        """Record what this process itself just wrote (a touch, a stored inventory); the entry
        keeps its load time, so the digest is still re-read within CACHE_SECONDS."""
        with self._lock:
            entry = self._agents.get(agent_id)
            if entry is not None:
                self._agents[agent_id] = replace(entry, **changes)

    def adopt(self, generation: str) -> None:
        """The generation this process just committed, after it dropped every entry: entries
        read from now on are current with it. Another process's later change still differs."""
        with self._lock:
            self._generation = generation
            self._adopted = time.monotonic()

    def forget(self, generation: bool = False) -> None:
        """Drop every entry; with `generation`, the generation too, so the next caller reads it
        whatever its age (rows changed with raw SQL, which bumps nothing)."""
        with self._lock:
            self._drop()
            if generation:
                self._generation = None
                self._confirmed = float("-inf")

    def _drop(self) -> None:
        self._agents = {}
        self.epoch += 1


def digest_fresh(entry: CachedAgent) -> bool:
    """Whether the entry's inventory digest may answer an unchanged upload: another worker may
    have stored a newer inventory since the entry was read."""
    return time.monotonic() - entry.loaded <= CACHE_SECONDS


def bump_generation(conn: Connection) -> str:
    """Make every process's credential cache re-read: run in the transaction that changes
    credentials (or replaces the data), so the change and the new generation commit together."""
    generation = secrets.token_hex(8)
    # An upsert: two processes writing the first generation at once must not collide
    # (models.db accepts only these two databases).
    if conn.dialect.name == "mysql":
        conn.execute(mysql_insert(_SETTINGS).values(key=GENERATION_KEY, value=generation)
                     .on_duplicate_key_update(value=generation))
    else:
        conn.execute(sqlite_insert(_SETTINGS).values(key=GENERATION_KEY, value=generation)
                     .on_conflict_do_update(index_elements=["key"], set_={"value": generation}))
    return generation


class WorkIndex:
    """Endpoints with something to poll for, refreshed for the whole fleet about every
    CACHE_SECONDS (one query: ahead of expiry by the server's fast path, else by whichever
    poll finds it stale) or after a local change."""

    def __init__(self) -> None:
        self._ids: frozenset[int] = frozenset()
        self._loaded = float("-inf")
        self._generation = 0
        self._lock = threading.Lock()

    def known_idle(self, endpoint_id: int) -> bool:
        """True when the index is fresh and says no work; never queries."""
        return self._fresh() and endpoint_id not in self._ids

    def has_work(self, endpoint_id: int, load: Callable[[], set[int]]) -> bool:
        self.refresh(load)
        return endpoint_id in self._ids

    def refresh(self, load: Callable[[], set[int]], ahead: float = 0.0) -> None:
        """Read the index again with `load` when due (`ahead`: that many seconds early), by
        one caller while the others wait for its answer."""
        if not self.due(ahead):
            return
        with self._lock:
            if self.due(ahead):
                started = time.monotonic()
                generation = self._generation
                ids = frozenset(load())
                self._ids = ids
                # A dispatch committed while the query ran may be missing from it: keep the
                # index stale so the next poll reads again.
                if generation == self._generation:
                    self._loaded = started

    def due(self, ahead: float = 0.0) -> bool:
        """Whether the index was read more than CACHE_SECONDS - `ahead` ago (or invalidated)."""
        return time.monotonic() - self._loaded > CACHE_SECONDS - ahead

    def invalidate(self) -> None:
        self._generation += 1
        self._loaded = float("-inf")

    def _fresh(self) -> bool:
        return not self.due()


_AGENTS: dict[str, AgentCache] = {}
_WORK: dict[str, WorkIndex] = {}
_REGISTRY_LOCK = threading.Lock()


# Rendering an engine's URL cost ~20 µs, a few per agent request: once per engine instead.
_KEYS: weakref.WeakKeyDictionary[Engine, str] = weakref.WeakKeyDictionary()


def _key(engine: Engine) -> str:
    key = _KEYS.get(engine)
    if key is None:
        key = _KEYS[engine] = engine.url.render_as_string(hide_password=True)
    return key


def _one_per_database(registry: dict[str, _T], engine: Engine, make: Callable[[], _T]) -> _T:
    """One cache per database: a process may serve (or test against) several."""
    key = _key(engine)
    found = registry.get(key)
    if found is None:
        with _REGISTRY_LOCK:
            found = registry.setdefault(key, make())
    return found


def agents_of(engine: Engine) -> AgentCache:
    return _one_per_database(_AGENTS, engine, AgentCache)


def work_of(engine: Engine) -> WorkIndex:
    return _one_per_database(_WORK, engine, WorkIndex)


def forget_agents() -> None:
    """Drop every cached credential and the generation they were confirmed against (tests that
    change rows with raw SQL, which bumps no generation)."""
    for cache in list(_AGENTS.values()):
        cache.forget(generation=True)


def work_changed() -> None:
    """Make every work index re-read at the next poll."""
    for index in list(_WORK.values()):
        index.invalidate()


# --- seeing this process's own changes ---------------------------------------------------------

_AUTH_FLAG = "patchflow.agent_cache.auth"
_WORK_FLAG = "patchflow.agent_cache.work"


def _table_name(statement: Any) -> str | None:
    table = getattr(statement, "table", None)
    return getattr(table, "name", None)


def _assigned(state: ORMExecuteState) -> list[dict[str, Any]]:
    """Column name → value an UPDATE assigns, per row of parameters (a SQL expression stays
    an expression)."""
    listed = state.execution_options.get(ASSIGNED_ROWS)
    if listed is not None:
        return list(listed)
    fixed = {str(getattr(column, "key", column)): getattr(value, "value", value)
             for column, value in (getattr(state.statement, "_values", None) or {}).items()}
    params = state.parameters
    return [{**{str(k): v for k, v in row.items()}, **fixed}
            for row in (params if isinstance(params, list) else [params or {}])]


@event.listens_for(Session, "do_orm_execute")
def _on_execute(state: ORMExecuteState) -> None:
    statement = state.statement
    if not isinstance(statement, Update | Delete):
        return
    name = _table_name(statement)
    if name not in WORK_TABLES and name != "endpoints":
        return
    rows = [] if isinstance(statement, Delete) else _assigned(state)
    if name == "install_job_items":
        # Only a move to "dispatched" creates work; results and progress do not.
        if any(row.get("state") == DISPATCHED for row in rows):
            state.session.info[_WORK_FLAG] = True
    elif name == "install_jobs":
        if any("status" in row for row in rows):  # resumed, paused, cancelled
            state.session.info[_WORK_FLAG] = True
    elif (isinstance(statement, Delete) or any(
            row.keys() & AUTH_COLUMNS
            # A file import clears the stored digest. An agent upload sets one: the process
            # that stored it updates its own entry, so that is no reason to drop every agent.
            or ("inventory_sha256" in row and row["inventory_sha256"] is None)
            for row in rows)):
        _credentials_changed(state.session)


@event.listens_for(Session, "after_flush")
def _on_flush(session: Session, _context: Any) -> None:
    for obj in [*session.new, *session.dirty, *session.deleted]:
        if isinstance(obj, InstallJob) or (isinstance(obj, InstallJobItem)
                                           and obj.state == DISPATCHED):
            session.info[_WORK_FLAG] = True
        elif isinstance(obj, Endpoint) and obj not in session.new:  # a new agent: nothing cached
            attrs = inspect(obj).attrs
            if obj in session.deleted or any(
                    attrs[c].history.has_changes() for c in (*AUTH_COLUMNS, "inventory_sha256")):
                _credentials_changed(session)


def _credentials_changed(session: Session) -> None:
    """Once per transaction: a new generation for the other processes, a drop for this one."""
    if not session.info.get(_AUTH_FLAG):
        connection = session.connection()
        session.info[_AUTH_FLAG] = (connection.engine, bump_generation(connection))


@event.listens_for(Session, "after_commit")
def _on_commit(session: Session) -> None:
    changed = session.info.pop(_AUTH_FLAG, None)
    if changed:
        # The agents of the database it changed; those of another database this process
        # serves or tests against stay (each has its own generation).
        engine, generation = changed
        cache = agents_of(engine)
        cache.forget()
        # This process knows the generation it wrote: without it, its next confirm would see
        # a new generation and drop every agent a second time (a second wave of reads).
        cache.adopt(generation)
    if session.info.pop(_WORK_FLAG, False):
        work_changed()


@event.listens_for(Session, "after_rollback")
def _on_rollback(session: Session) -> None:
    session.info.pop(_AUTH_FLAG, None)
    session.info.pop(_WORK_FLAG, None)
