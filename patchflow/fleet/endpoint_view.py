"""One endpoint as an administrator looks at it: the listing row, whether its agent is online,
what it misses (with reasons and severity), what is installed, the scans that covered it and
its install history. Read-only; the console's endpoint page and anything else that wants the
whole picture call `endpoint_detail`.

Online means the agent was heard from within its poll interval times three plus the interval
at which the server records polls (patchflow.fleet.agents.TOUCH_INTERVAL): a polling agent
never looks offline between two recorded polls, and one that stopped shows offline within
minutes. The interval is `[agents] poll_seconds` (the agent's --poll-seconds, default 60).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from models import (
    Endpoint,
    InstalledUpdate,
    InstallJobItem,
    MissingPatch,
    Patch,
    Scan,
)
from models.base import utcnow
from patchflow import config
from patchflow.catalog.vuln_query import load_rated_missing
from patchflow.fleet.agents import TOUCH_INTERVAL
from patchflow.fleet.endpoints import describe_endpoint, get_endpoint
from patchflow.fleet.tree import Tree
from patchflow.scanning.missing_query import MissingFilters, not_declined

DEFAULT_POLL_SECONDS = 60.0
HISTORY = 50
PRESENCE = ("online", "offline", "never seen", "no agent")  # what `presence` tells


def poll_seconds() -> float:
    return float(config.number("agents", "poll_seconds", DEFAULT_POLL_SECONDS, 1, 86400))


def offline_after(poll: float) -> dt.timedelta:
    return TOUCH_INTERVAL + dt.timedelta(seconds=3 * poll)


def presence(last_seen: dt.datetime | str | None, enrolled: bool, now: dt.datetime,
             poll: float) -> str:
    """'online', 'offline', 'never seen' or 'no agent' (an imported inventory)."""
    if not enrolled:
        return "no agent"
    if last_seen is None or last_seen == "":
        return "never seen"
    if isinstance(last_seen, str):
        last_seen = dt.datetime.fromisoformat(last_seen)
    if last_seen.tzinfo is None:
        last_seen = last_seen.replace(tzinfo=dt.UTC)
    return "online" if now - last_seen <= offline_after(poll) else "offline"


def scans_covering(session: Session, endpoint: Endpoint, policy: str | None,
                   limit: int = HISTORY) -> list[dict[str, Any]]:
    """The scans whose scope took in this endpoint: every endpoint, its name, its group or an
    ancestor, its policy; and the scan that last wrote its state."""
    tree = Tree.load(session)
    groups = [tree.names.get(g, "") for g in tree.ancestors(endpoint.group_id)]
    scopes = [Scan.scope == "all endpoints",
              *[Scan.scope == f"group {g}" for g in groups],
              Scan.scope.like(f"endpoints %{endpoint.hostname}%")]
    if policy:
        scopes.append(Scan.scope == f"policy {policy}")
    if endpoint.last_scan_id:
        scopes.append(Scan.id == endpoint.last_scan_id)
    rows = session.scalars(select(Scan).where(or_(*scopes)).order_by(Scan.id.desc())
                           .limit(limit * 2))
    found = []
    for scan in rows:
        names = (scan.scope or "").removeprefix("endpoints ").split(",")
        if (scan.scope or "").startswith("endpoints ") and endpoint.hostname not in names \
                and scan.id != endpoint.last_scan_id:
            continue  # a LIKE match on part of another name
        found.append({"id": scan.id, "trigger": scan.trigger, "scope": scan.scope,
                      "status": scan.status, "started_at": scan.started_at,
                      "finished_at": scan.finished_at,
                      "last": scan.id == endpoint.last_scan_id})
    return found[:limit]


def install_history(session: Session, endpoint_id: int, limit: int = HISTORY
                    ) -> list[dict[str, Any]]:
    rows = session.execute(
        select(InstallJobItem, Patch.kb, Patch.ukey, Patch.title)
        .join(Patch, Patch.id == InstallJobItem.patch_id)
        .where(InstallJobItem.endpoint_id == endpoint_id)
        .order_by(InstallJobItem.id.desc()).limit(limit)).all()
    return [{"job_id": item.job_id, "patch_id": item.patch_id, "patch": kb or ukey,
             "title": title, "state": item.state, "exit_code": item.exit_code,
             "message": item.message, "updated_at": item.updated_at}
            for item, kb, ukey, title in rows]


def listing_extras(session: Session) -> dict[str, dict[str, Any]]:
    """Per endpoint (by host name): when its scan state was set and how many patches it
    misses, for the endpoints list (two grouped queries, not one per row)."""
    counts = dict(session.execute(
        select(MissingPatch.endpoint_id, func.count())
        .where(not_declined())
        .group_by(MissingPatch.endpoint_id)
    ).tuples().all())
    return {hostname: {"id": eid, "scan_state_at": at, "missing": counts.get(eid, 0)}
            for eid, hostname, at in session.execute(
                select(Endpoint.id, Endpoint.hostname, Endpoint.scan_state_at)
                .where(Endpoint.replaces_endpoint_id.is_(None))).tuples()}


def _text(value: Any) -> str | None:
    """A frame cell as text; pandas' missing values (None, NaN) as None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def endpoint_detail(session: Session, hostname: str, now: dt.datetime | None = None
                    ) -> dict[str, Any]:
    endpoint = get_endpoint(session, hostname)
    row = describe_endpoint(session, endpoint.hostname)[0]
    poll = poll_seconds()
    # Rated pairs (patchflow.catalog.vuln_query): a third-party patch's severity is this endpoint's.
    missing = load_rated_missing(session, MissingFilters(endpoint=endpoint.hostname))
    kbs = session.execute(select(InstalledUpdate.kb, InstalledUpdate.installed_on)
                          .where(InstalledUpdate.endpoint_id == endpoint.id)
                          .order_by(InstalledUpdate.kb)).tuples().all()
    return {
        **row,
        "presence": presence(endpoint.last_seen, row["enrolled"], now or utcnow(), poll),
        "poll_seconds": poll,
        "scan_state_at": endpoint.scan_state_at,
        "scan_message": endpoint.scan_message,
        "inventory_at": endpoint.inventory_at,
        "missing": [
            {"patch_id": int(r["patch_id"]), "patch": _text(r["kb"]) or _text(r["package_id"]),
             **{k: _text(r[k]) for k in ("title", "severity", "category", "reason", "product",
                                         "installed_version", "available_version",
                                         "restart_required")},
             "exploited": bool(r["exploited"]), "kev_due_date": r["kev_due_date"]}
            for r in missing.to_dict("records")],
        "installed_kbs": [{"kb": kb, "installed_on": on} for kb, on in kbs],
        "scans": scans_covering(session, endpoint, row["policy"]),
        "installs": install_history(session, endpoint.id),
    }
