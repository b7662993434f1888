"""A policy's deployment rings, and the gate between two rings.

Rings are ordered: the first (the pilot) gets the cycle's installs first; each later ring only
when the ring before it reached its minimum success rate (succeeded or pending reboot, over
its items), after its delay. A failed gate halts the cycle with the reason and leaves every
later ring untouched. An endpoint belongs to the first ring naming its group or an ancestor;
a policy without rings has one ring, `all`. `gate` is pure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models import Group, PolicyRing
from patchflow import audit
from patchflow.errors import NotFoundError, UserError
from patchflow.groups import groups_by_names

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class RingSpec:
    name: str
    group_ids: frozenset[int]
    delay_minutes: int = 0
    min_success_rate: int = 95


def gate(previous: str, counts: dict[str, int], min_rate: int) -> tuple[bool, str]:
    """(passed, reason) for the ring after `previous`, from its install job's item counts."""
    items = sum(counts.values())
    if not items:
        return True, f"ring {previous} had nothing to install"
    applied = counts.get("succeeded", 0) + counts.get("reboot pending", 0)
    rate = 100.0 * applied / items
    verdict = f"ring {previous}: {applied} of {items} installs succeeded ({rate:.0f} %)"
    if rate + 1e-9 < min_rate:
        return False, f"{verdict}, below the gate's {min_rate} %: cycle halted"
    return True, f"{verdict}, gate {min_rate} % passed"


def ring_of(chain: set[int], rings: list[RingSpec]) -> str | None:
    for ring in rings:
        if ring.group_ids & chain:
            return ring.name
    return None


def load(session: Session, policy_id: int) -> list[RingSpec]:
    return [RingSpec(r.name, frozenset(json.loads(r.group_ids)), r.delay_minutes,
                     r.min_success_rate)
            for r in session.scalars(select(PolicyRing).where(PolicyRing.policy_id == policy_id)
                                     .order_by(PolicyRing.position))]


def get_policy(session: Session, name: str) -> Any:
    from patchflow.cycle.plan import get_policy as lookup  # plan reads rings: no cycle at import

    return lookup(session, name)


def add_ring(session: Session, policy: str, name: str, groups: list[str] | None, who: str,
             delay_minutes: int = 0, min_success_rate: int = 95) -> dict[str, Any]:
    """Append a ring to the policy's ring order."""
    pol = get_policy(session, policy)
    name = (name or "").strip()
    if not _NAME.match(name):
        raise UserError(f"invalid ring name {name!r}: letters, digits, '.', '_' and '-'")
    if session.scalar(select(PolicyRing.id).filter_by(policy_id=pol.id, name=name)):
        raise UserError(f"policy {pol.name} already has a ring named {name!r}")
    if not 0 <= delay_minutes <= 60 * 24 * 60:
        raise UserError("--delay-minutes must be between 0 and 86400")
    if not 0 <= min_success_rate <= 100:
        raise UserError("--min-success-rate must be between 0 and 100")
    chosen = groups_by_names(session, groups)
    ids = [g.id for g in chosen]
    position = (session.scalar(select(func.max(PolicyRing.position))
                               .where(PolicyRing.policy_id == pol.id)) or 0) + 1
    session.add(PolicyRing(policy_id=pol.id, position=position, name=name,
                           group_ids=json.dumps(ids), delay_minutes=delay_minutes,
                           min_success_rate=min_success_rate))
    session.flush()
    audit.record(session, who, "ring.add", f"{pol.name}/{name}",
                 f"groups {', '.join(g.name for g in chosen)}", source="cli")
    return {"policy": pol.name, "rings": list_rings(session, pol.name)}


def list_rings(session: Session, policy: str) -> list[dict[str, Any]]:
    pol = get_policy(session, policy)
    names = dict(session.execute(select(Group.id, Group.name)).tuples().all())
    return [{"position": n, "name": r.name,
             "groups": [names.get(g, f"#{g}") for g in sorted(r.group_ids)],
             "delay_minutes": r.delay_minutes, "min_success_rate": r.min_success_rate}
            for n, r in enumerate(load(session, pol.id), 1)]


def delete_ring(session: Session, policy: str, name: str, who: str) -> None:
    pol = get_policy(session, policy)
    removed = session.execute(delete(PolicyRing).where(
        PolicyRing.policy_id == pol.id, PolicyRing.name == name)).rowcount  # type: ignore[attr-defined]
    if not removed:
        raise NotFoundError(f"policy {pol.name} has no ring named {name!r}")
    audit.record(session, who, "ring.delete", f"{pol.name}/{name}", source="cli")
