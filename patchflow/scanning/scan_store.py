"""The scan's database side: read a batch of inventories and the catalog into the engine's
frames (applicability.frames), and write what the engine found back, one batch per transaction.

Results replace each endpoint's previous ones atomically; a pair that was already missing keeps
its first `detected_at`, so reports can say "missing since".
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import pandas as pd
from sqlalchemy import (
    Table,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from applicability.basis import CatalogDigests, catalog_digests
from applicability.catalog import app_catalog_from_records
from applicability.engine import ScanResult, prepare, used_mask, used_programs
from applicability.frames import ScanFrames, make_frame
from applicability.prepared import PreparedCatalog
from models import (
    Endpoint,
    InstalledProgram,
    InstalledUpdate,
    InventoryPack,
    MissingPatch,
    Patch,
    PatchInstaller,
    PatchProduct,
    PatchServer,
    Policy,
    ServerPatch,
)
from models.base import utcnow
from models.bulk import fetch_rows, insert_rows, stamp, update_rows
from models.enums import ScanState
from patchflow import __version__
from patchflow.fleet.programs_pack import PACK_COLUMNS, unpack
from patchflow.fleet.tree import Tree
from patchflow.ops import faults
from patchflow.scanning.missing_query import fetch_frame
from sources.records import InstallerRecord, PatchRecord

_prepare_lock = threading.Lock()


@dataclass
class Catalog:
    """The catalog part of the frames: loaded once per scan run, shared by every batch.

    `prepared` is the engine's catalog preparation (applicability.PreparedCatalog), built on
    first use and then reused by every batch. It is a cache, not a field: Prefect, which walks
    a dataclass parameter's fields, does not see it, and a copy or pickle leaves it behind (the
    receiving side rebuilds it on first use).
    """

    ms_catalog: pd.DataFrame
    app_catalog: pd.DataFrame
    server_patches: pd.DataFrame
    version: tuple[Any, ...] = ()

    @property
    def prepared(self) -> PreparedCatalog:
        found = self.__dict__.get("_prepared")
        if found is None:
            with _prepare_lock:  # batches running in threads build it once
                found = self.__dict__.get("_prepared")
                if found is None:
                    found = prepare(self.ms_catalog, self.app_catalog, self.server_patches)
                    self.__dict__["_prepared"] = found
        return found

    @property
    def digests(self) -> CatalogDigests:
        """Per-key digests for incremental scans (applicability.basis), a cache like
        `prepared`."""
        found = self.__dict__.get("_digests")
        if found is None:
            # patchflow's version salts it: a release that writes results differently
            # rescans every endpoint once, like a change to the rules does.
            found = catalog_digests(self.ms_catalog, self.app_catalog, self.server_patches,
                                    salt=f"patchflow {__version__}")
            self.__dict__["_digests"] = found
        return found

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_prepared", "_digests")}


def catalog_version(session: Session) -> tuple[Any, ...]:
    """Changes whenever a sync changes what any server offers (revisions only grow)."""
    sp = session.execute(
        select(func.count(), func.coalesce(func.sum(ServerPatch.revision), 0))
    ).one()
    patches = session.execute(select(func.count(), func.max(Patch.updated_at))).one()
    return (*sp, *patches)


def load_catalog(session: Session) -> Catalog:
    ms_rows = session.execute(
        select(PatchProduct.patch_id, Patch.kb, PatchProduct.product, PatchProduct.fixed_build,
               PatchProduct.supersedes_kb, PatchProduct.subtype, PatchProduct.severity,
               Patch.release_date)
        .join(Patch, Patch.id == PatchProduct.patch_id)
        # KB patches, and MSRC's version-only fixes (Edge...: no KB, see sources.msrc).
        .where(or_(Patch.kb.is_not(None), Patch.source == "msrc"))
    ).all()
    ms = make_frame("ms_catalog", pd.DataFrame(
        ms_rows, columns=["patch_id", "kb", "product", "fixed_build", "supersedes_kb", "subtype",
                          "severity", "release_date"]))
    return Catalog(ms, _app_catalog(session), _server_patches(session), catalog_version(session))


def _app_catalog(session: Session) -> pd.DataFrame:
    """Rebuilt through the same function the parser-side frames use, so the matching rules
    (which AppsAndFeaturesEntries describe the program itself) exist once."""
    patches = session.execute(
        select(Patch.id, Patch.package_id, Patch.version, Patch.title, Patch.vendor)
        .where(Patch.package_id.is_not(None), Patch.version.is_not(None))
        .order_by(Patch.id)
    ).all()
    installers: dict[int, list[InstallerRecord]] = {}
    for row in session.execute(select(PatchInstaller).order_by(PatchInstaller.id)).scalars():
        installers.setdefault(row.patch_id, []).append(InstallerRecord(
            url=row.url, sha256=row.sha256, type=row.type, arch=row.arch, scope=row.scope,
            locale=row.locale, product_code=row.product_code, upgrade_code=row.upgrade_code,
            apps_and_features=tuple(json.loads(row.apps_and_features or "[]")),
        ))
    records = [
        PatchRecord(source="winget", key=f"{p.package_id}@{p.version}", title=p.title,
                    vendor=p.vendor, category="Applications", package_id=p.package_id,
                    version=p.version, installers=tuple(installers.get(p.id, ())))
        for p in patches
    ]
    frame = app_catalog_from_records(records, first_id=1)
    ids = [p.id for p in patches]
    frame["patch_id"] = [ids[i - 1] for i in frame["patch_id"]]
    return frame


def _server_patches(session: Session) -> pd.DataFrame:
    rows = session.execute(select(ServerPatch.server_id, ServerPatch.patch_id)).all()
    return make_frame("server_patches", pd.DataFrame(rows, columns=["server_id", "patch_id"]))


def default_server_id(session: Session) -> int | None:
    """Endpoints without a policy scan against the first patch server (normally "local")."""
    return session.scalar(select(PatchServer.id).order_by(PatchServer.id).limit(1))


def load_inventory(session: Session, endpoint_ids: list[int],
                   used_by: PreparedCatalog | None = None) -> dict[str, pd.DataFrame]:
    """The batch's inventory frames; with `used_by`, only the programs some rule of that
    catalog can use (see read_programs)."""
    endpoints = fetch_frame(
        session,
        select(Endpoint.id, Endpoint.hostname, Endpoint.os_name, Endpoint.os_display_version,
               Endpoint.os_build, Endpoint.os_ubr, Endpoint.os_arch, Endpoint.hotpatch,
               Endpoint.installation_type, Endpoint.group_id, Endpoint.ms_facts,
               Endpoint.inventory_rev)
        .where(Endpoint.id.in_(endpoint_ids), Endpoint.os_build.is_not(None)),
        ["endpoint_id", "hostname", "os_name", "display_version", "build", "ubr", "arch",
         "hotpatch", "installation_type", "group_id", "ms_facts", "inventory_rev"])
    if len(endpoints):  # the driver's 0/1 (SQLite, MariaDB), as SQLAlchemy's Boolean gives it
        endpoints["hotpatch"] = endpoints["hotpatch"].astype(bool)
    kbs = fetch_frame(
        session,
        select(InstalledUpdate.endpoint_id, InstalledUpdate.kb)
        .where(InstalledUpdate.endpoint_id.in_(endpoint_ids)),
        ["endpoint_id", "kb"])
    programs = read_programs(session, endpoint_ids, used_by)
    facts = ms_facts_frame(endpoints["endpoint_id"], endpoints["ms_facts"])
    endpoints = endpoints.drop(columns=["ms_facts"])
    return {"endpoints": endpoints, "installed_kbs": kbs, "programs": programs, "ms_facts": facts}


_PROGRAM_COLUMNS = list(PACK_COLUMNS)


def read_programs(session: Session, endpoint_ids: list[int],
                  used_by: PreparedCatalog | None = None) -> pd.DataFrame:
    """The batch's installed programs, in (endpoint, id) order.

    From each endpoint's inventory pack (one value per endpoint rather than ~150 rows: see
    patchflow.fleet.programs_pack); the rows of an endpoint without a usable one are read from
    installed_programs, so the frame is the same whichever way each endpoint was read.

    used_by: keep only the programs some rule of that prepared catalog can use, which is the
    engine's own first step (`engine.used_programs`: 145 of a typical endpoint's 150 go), done
    here on plain lists before pandas builds the frame, which cost more than the rest of the
    read. A scan passes it; `missing --explain` and the bench's reference loop read everything.
    """
    packs = dict(fetch_rows(session, select(InventoryPack.endpoint_id, InventoryPack.programs)
                            .where(InventoryPack.endpoint_id.in_(endpoint_ids)))[1])
    columns = {e: c for e in endpoint_ids if (c := unpack(packs.get(e))) is not None}
    rest = [e for e in endpoint_ids if e not in columns]
    parts: list[pd.DataFrame] = []
    if columns:
        order = sorted(columns)
        out: dict[str, list[Any]] = {c: [] for c in _PROGRAM_COLUMNS}
        for endpoint_id in order:
            for name, values in zip(_PROGRAM_COLUMNS, columns[endpoint_id], strict=True):
                out[name].extend(values)
        owners = np.repeat(np.asarray(order, dtype=np.int64),
                           [len(columns[e][0]) for e in order])
        if used_by is not None:
            # The few rows kept (~5 in 150), gathered by index rather than by a pass over all.
            kept = np.flatnonzero(used_mask(out["name"], out["product_code"],
                                            out["upgrade_code"], used_by))
            owners, at = owners[kept], kept.tolist()
            out = {name: [values[i] for i in at] for name, values in out.items()}
        parts.append(pd.DataFrame({"endpoint_id": owners, **out},
                                  columns=["endpoint_id", *_PROGRAM_COLUMNS]))
    if rest or not parts:
        plain = _read_programs_plain(session, rest)
        parts.append(plain if used_by is None else used_programs(plain, used_by))
    filled = [p for p in parts if not p.empty]
    if len(filled) < 2:
        return filled[0] if filled else parts[0]
    # Both parts are in (endpoint, id) order: a stable sort on the endpoint interleaves them.
    both = pd.concat(filled, ignore_index=True)
    return both.sort_values("endpoint_id", kind="stable").reset_index(drop=True)


def _read_programs_plain(session: Session, endpoint_ids: list[int]) -> pd.DataFrame:
    table = InstalledProgram.__table__
    columns = ["endpoint_id", *_PROGRAM_COLUMNS]
    stmt = select(*(table.c[c] for c in columns)).where(table.c.endpoint_id.in_(endpoint_ids))
    return fetch_frame(session, stmt.order_by(table.c.endpoint_id, table.c.id), columns)


def ms_facts_frame(endpoint_ids: Any, stored: Any) -> pd.DataFrame:
    """The ms_facts frame from endpoints.ms_facts JSON; a damaged value counts as no facts
    rather than failing the batch (the inventory is re-sent on the next run)."""
    rows = []
    for eid, text in zip(endpoint_ids, stored, strict=True):
        if not isinstance(text, str) or not text:
            continue
        try:
            facts = json.loads(text)
        except ValueError:
            continue
        for fact in facts if isinstance(facts, list) else []:
            if isinstance(fact, dict) and isinstance(fact.get("kind"), str):
                rows.append({"endpoint_id": int(eid), **{
                    k: fact.get(k) if isinstance(fact.get(k), str) else None
                    for k in ("kind", "name", "version", "detail")}})
    return make_frame("ms_facts", rows)


def availability(session: Session, endpoints: pd.DataFrame) -> pd.DataFrame:
    """endpoint -> patch server, through the nearest ancestor group's policy."""
    tree = Tree.load(session)
    policies = {
        pid: (server_id, use)
        for pid, server_id, use in session.execute(
            select(Policy.id, Policy.patch_server_id, Policy.use_patch_server)
        )
    }
    fallback = default_server_id(session)
    rows = []
    for endpoint_id, group_id in zip(endpoints["endpoint_id"], endpoints["group_id"], strict=True):
        policy_id = tree.effective_policy(None if pd.isna(group_id) else int(group_id))
        server_id = fallback
        if policy_id is not None and policies.get(policy_id, (None, False))[1]:
            server_id = policies[policy_id][0] or fallback
        if server_id is not None:
            rows.append({"endpoint_id": int(endpoint_id), "server_id": server_id})
    return make_frame("availability", rows)


@dataclass
class BatchBasis:
    """What a batch's results are computed from besides the frames (for incremental scans):
    each endpoint's patch server and the inventory revision read with its inventory."""

    servers: dict[int, int | None]
    inventory_rev: dict[int, int]


def frames_for(session: Session, endpoint_ids: list[int], catalog: Catalog) -> ScanFrames:
    """The batch's frames, every program included."""
    return read_batch(session, endpoint_ids, catalog)[0]


def read_batch(session: Session, endpoint_ids: list[int], catalog: Catalog,
               used_by: PreparedCatalog | None = None) -> tuple[ScanFrames, BatchBasis]:
    """The batch's frames and basis; used_by (the catalog's preparation): only the programs a
    rule can use (a scan's read: the engine drops the others first anyway)."""
    inv = load_inventory(session, endpoint_ids, used_by)
    eps = inv["endpoints"]
    available = availability(session, eps)
    servers = dict.fromkeys(eps["endpoint_id"].astype(int).tolist())
    servers.update(zip(available["endpoint_id"].tolist(), available["server_id"].tolist(),
                       strict=True))
    basis = BatchBasis(servers, dict(zip(eps["endpoint_id"].astype(int).tolist(),
                                         eps["inventory_rev"].astype(int).tolist(),
                                         strict=True)))
    frames = ScanFrames(
        endpoints=make_frame("endpoints", eps.drop(columns=["group_id", "inventory_rev"])),
        installed_kbs=make_frame("installed_kbs", inv["installed_kbs"]),
        programs=make_frame("programs", inv["programs"]),
        ms_catalog=catalog.ms_catalog,
        app_catalog=catalog.app_catalog,
        availability=available,
        server_patches=catalog.server_patches,
        ms_facts=inv["ms_facts"],
    )
    return frames, basis


@dataclass
class BatchCounts:
    scanned: int = 0
    missing_endpoints: int = 0
    up_to_date: int = 0
    failed: int = 0
    pairs: int = 0

    def add(self, other: BatchCounts) -> None:
        for name in ("scanned", "missing_endpoints", "up_to_date", "failed", "pairs"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def mark(session: Session, endpoint_ids: list[int], state: str, message: str | None) -> None:
    session.execute(
        update(Endpoint).where(Endpoint.id.in_(endpoint_ids)).values(
            scan_state=state, scan_state_at=utcnow(), scan_message=message)
    )


_MISSING = cast(Table, MissingPatch.__table__)
_MISSING_COLUMNS = ("endpoint_id", "patch_id", "product", "installed_version",
                    "available_version", "reason", "detected_at", "scan_id")
_ENDPOINTS = cast(Table, Endpoint.__table__)


def write_results(
    session: Session, scan_id: int | None, endpoint_ids: list[int], frames: ScanFrames,
    result: ScanResult,
) -> BatchCounts:
    """Replace the batch's missing patches and set every endpoint's scan state."""
    now = utcnow()
    scanned = set(frames.endpoints["endpoint_id"].astype(int))
    no_inventory = [e for e in endpoint_ids if e not in scanned]
    # When each pair still missing was first found, as the column's text (models.bulk.stamp;
    # a few distinct times, each formatted once).
    texts: dict[dt.datetime, str] = {}
    previous: dict[tuple[int, int], str] = {
        (e, p): texts.get(at) or texts.setdefault(at, stamp(at)) for e, p, at in session.execute(
            select(MissingPatch.endpoint_id, MissingPatch.patch_id, MissingPatch.detected_at)
            .where(MissingPatch.endpoint_id.in_(list(scanned)))
        )
    }
    found_now = stamp(now)
    session.execute(delete(MissingPatch).where(MissingPatch.endpoint_id.in_(list(scanned))))
    missing = result.missing
    rows = [
        (e, p, _s(prod, 255), _s(iv, 128), _s(av, 128), str(r),
         previous.get((e, p), found_now), scan_id)
        for e, p, prod, iv, av, r in zip(
            missing["endpoint_id"].astype(int).tolist(), missing["patch_id"].astype(int).tolist(),
            missing["product"], missing["installed_version"], missing["available_version"],
            missing["reason"], strict=True)
    ]
    # One statement for the batch, at the driver (models.bulk).
    insert_rows(session, _MISSING, _MISSING_COLUMNS, rows)
    faults.point("scan.batch_write")  # test hook: the batch half written, not committed
    counts = BatchCounts(scanned=len(scanned), pairs=len(rows))
    with_missing = set(missing["endpoint_id"].astype(int))
    notes = _notes(result)
    for state, ids in ((ScanState.MISSING_PATCHES, scanned & with_missing),
                       (ScanState.UP_TO_DATE, scanned - with_missing)):
        plain = [e for e in ids if e not in notes]
        if plain:
            session.execute(update(Endpoint).where(Endpoint.id.in_(plain)).values(
                scan_state=state, scan_state_at=now, scan_message=None, last_scan_id=scan_id))
        # Endpoints with a caveat get their own message, in a few statements, not one per
        # endpoint (on MariaDB a round trip each).
        update_rows(session, _ENDPOINTS, {e: {"scan_message": notes[e][:2000]}
                                          for e in ids & notes.keys()},
                    same={"scan_state": state, "scan_state_at": now, "last_scan_id": scan_id})
    counts.missing_endpoints = len(scanned & with_missing)
    counts.up_to_date = len(scanned - with_missing)
    if no_inventory:
        mark(session, no_inventory, ScanState.SCAN_FAILED, "no inventory received yet")
        counts.failed = len(no_inventory)
    return counts


def _notes(result: ScanResult) -> dict[int, str]:
    """Per-endpoint caveats: an OS with no MSRC product, programs that matched ambiguously."""
    notes: dict[int, list[str]] = {}
    for e, reason in zip(result.unmapped["endpoint_id"], result.unmapped["reason"], strict=True):
        notes.setdefault(int(e), []).append(f"Microsoft updates not evaluated: {reason}")
    for e, program, reason in zip(result.ambiguous["endpoint_id"], result.ambiguous["program"],
                                  result.ambiguous["reason"], strict=True):
        notes.setdefault(int(e), []).append(f"{program}: {reason}")
    return {e: "; ".join(v) for e, v in notes.items()}


def _s(value: object, limit: int) -> str | None:
    if value is None or (isinstance(value, float) and pd.isna(value)) or value is pd.NA:
        return None
    return str(value)[:limit]
