"""Storing inventories: each replaces the endpoint's previous one in the caller's transaction,
then the registered hooks (the scan's fast-path rescan) run after the commit."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, select, update
from sqlalchemy.orm import Session

from models import Endpoint, InstalledProgram, InstalledUpdate
from models.base import utcnow
from patchflow.errors import UserError
from patchflow.fleet.network import Network, is_roaming
from patchflow.groups import group_by_name
from patchflow.inventory import Inventory

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


_PROGRAM_COLUMNS = ("endpoint_id", "name", "version", "publisher", "product_code",
                    "upgrade_code", "arch", "scope", "install_date")
_UPDATE_COLUMNS = ("endpoint_id", "kb", "installed_on")


def _bulk_insert(session: Session, table: Table, columns: Sequence[str],
                 rows: list[tuple[Any, ...]]) -> None:
    """One executemany at the driver, with the dialect's placeholders.

    `session.execute(insert(table), rows)` spends more time in SQLAlchemy's per-row parameter
    processing than the database spends inserting; an upload of 200 programs runs here for every
    endpoint, so the rows go to the driver as plain tuples (dates already in the driver's form,
    see `_date_param`).
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    quote = dialect.identifier_preparer.quote
    mark = "?" if dialect.paramstyle == "qmark" else "%s"
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in columns)}) "
           f"VALUES ({', '.join([mark] * len(columns))})")
    connection.exec_driver_sql(sql, rows)


def _date_param(session: Session) -> Callable[[dt.date | None], Any]:
    """SQLite keeps dates as ISO text (what SQLAlchemy's Date type writes there); PyMySQL takes
    date objects as they are."""
    if session.get_bind().dialect.name == "sqlite":
        return lambda day: day.isoformat() if day is not None else None
    return lambda day: day


_ENDPOINTS = cast(Table, Endpoint.__table__)
_PROGRAMS = cast(Table, InstalledProgram.__table__)
_UPDATES = cast(Table, InstalledUpdate.__table__)
# Built once: constructing these statements per upload showed up in profiles.
_UPDATE_ENDPOINT = update(_ENDPOINTS).where(_ENDPOINTS.c.id == bindparam("endpoint"))
_DELETE_PROGRAMS = delete(_PROGRAMS).where(_PROGRAMS.c.endpoint_id == bindparam("endpoint"))
_DELETE_UPDATES = delete(_UPDATES).where(_UPDATES.c.endpoint_id == bindparam("endpoint"))


def ms_facts_json(doc: Inventory) -> str | None:
    """The document's Microsoft facts as stored in endpoints.ms_facts (NULL when none)."""
    if not doc.ms_facts:
        return None
    return json.dumps([f.model_dump() for f in doc.ms_facts], separators=(",", ":"))


def store_inventory(
    session: Session,
    doc: Inventory,
    endpoint_id: int | None = None,
    sighting: Sighting | None = None,
    group_id: int | None = None,
) -> int:
    """Replace an endpoint's inventory with `doc` inside the caller's transaction.

    endpoint_id is the authenticated agent's endpoint, which keeps its name whatever host name
    the document reports; None means a file import, which finds or creates the endpoint by host
    name. Rows go in with executemany-style bulk inserts: this runs for every upload from every
    endpoint.
    """
    now = utcnow()
    if endpoint_id is None:
        endpoint_id = _endpoint_for_import(session, doc.hostname, group_id)
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
    }
    if sighting is not None and sighting.ip is not None:
        values.update(last_seen=now, last_ip=sighting.ip,
                      roaming=is_roaming(sighting.ip, sighting.networks))
    elif sighting is None:
        values["last_seen"] = doc.collected_at or now
    session.execute(_UPDATE_ENDPOINT, {"endpoint": endpoint_id, **values})
    session.execute(_DELETE_PROGRAMS, {"endpoint": endpoint_id})
    session.execute(_DELETE_UPDATES, {"endpoint": endpoint_id})
    day = _date_param(session)
    _bulk_insert(session, _PROGRAMS, _PROGRAM_COLUMNS, [
        (endpoint_id, p.name, p.version, p.publisher, p.product_code, p.upgrade_code, p.arch,
         p.scope, day(p.install_date))
        for p in doc.programs
    ])
    _bulk_insert(session, _UPDATES, _UPDATE_COLUMNS, [
        (endpoint_id, u.kb, day(u.installed_on)) for u in doc.unique_updates()
    ])
    return endpoint_id


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
