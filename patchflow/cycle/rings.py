"""A policy's deployment rings, and the gate between two rings.

Rings are ordered: the first (the pilot) gets the cycle's installs first; each later ring only
when the ring before it reached its minimum success rate (succeeded or pending reboot, over
its items), after its delay; or, with a manual gate, when an administrator resumes the cycle
paused before it (flows/cycle.py). A failed or rejected gate halts the cycle with the reason
and leaves every later ring untouched. An endpoint belongs to the first ring naming its group
or an ancestor; a policy without rings has one ring, `all`. `gate` and `result` are pure.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models import Group, PolicyRing
from patchflow.errors import NotFoundError, UserError
from patchflow.fleet.groups import groups_by_names
from patchflow.ops import audit

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class RingSpec:
    name: str
    group_ids: frozenset[int]
    delay_minutes: int = 0
    min_success_rate: int = 95
    gate: str = "rate"


GATES = ("rate", "manual")


def gate(previous: str, counts: dict[str, int], min_rate: int) -> tuple[bool, str]:
    """(passed, reason) for the ring after `previous`, from its install job's item counts."""
    items = sum(counts.values())
    if not items:
        return True, result(previous, counts)
    applied = counts.get("succeeded", 0) + counts.get("reboot pending", 0)
    rate = 100.0 * applied / items
    verdict = result(previous, counts)
    if rate + 1e-9 < min_rate:
        return False, f"{verdict}, below the gate's {min_rate} %: cycle halted"
    return True, f"{verdict}, gate {min_rate} % passed"


def result(previous: str, counts: dict[str, int]) -> str:
    """How the ring went, in the words of its gate (what a manual gate shows the approver)."""
    items = sum(counts.values())
    if not items:
        return f"ring {previous} had nothing to install"
    applied = counts.get("succeeded", 0) + counts.get("reboot pending", 0)
    rate = 100.0 * applied / items
    return f"ring {previous}: {applied} of {items} installs succeeded ({rate:.0f} %)"


def ring_of(chain: set[int], rings: list[RingSpec]) -> str | None:
    for ring in rings:
        if ring.group_ids & chain:
            return ring.name
    return None


def load(session: Session, policy_id: int) -> list[RingSpec]:
    return [RingSpec(r.name, frozenset(json.loads(r.group_ids)), r.delay_minutes,
                     r.min_success_rate, r.gate or "rate")
            for r in session.scalars(select(PolicyRing).where(PolicyRing.policy_id == policy_id)
                                     .order_by(PolicyRing.position))]


def get_policy(session: Session, name: str) -> Any:
    from patchflow.cycle.plan import get_policy as lookup  # plan reads rings: no cycle at import

    return lookup(session, name)


def _checked(delay_minutes: int, min_success_rate: int, gate: str) -> str:
    """The gate, once the delay, rate and gate are valid (add and edit check the same)."""
    if not 0 <= delay_minutes <= 60 * 24 * 60:
        raise UserError("--delay-minutes must be between 0 and 86400")
    if not 0 <= min_success_rate <= 100:
        raise UserError("--min-success-rate must be between 0 and 100")
    gate = (gate or "").strip().lower()
    if gate not in GATES:
        raise UserError(f"invalid --gate {gate!r}: rate or manual")
    return gate


def add_ring(session: Session, policy: str, name: str, groups: list[str] | None, who: str,
             delay_minutes: int = 0, min_success_rate: int = 95,
             gate: str = "rate", source: str = "cli") -> dict[str, Any]:
    """Append a ring to the policy's ring order."""
    pol = get_policy(session, policy)
    name = (name or "").strip()
    if not _NAME.match(name):
        raise UserError(f"invalid ring name {name!r}: letters, digits, '.', '_' and '-'")
    if session.scalar(select(PolicyRing.id).filter_by(policy_id=pol.id, name=name)):
        raise UserError(f"policy {pol.name} already has a ring named {name!r}")
    gate = _checked(delay_minutes, min_success_rate, gate)
    chosen = groups_by_names(session, groups)
    ids = [g.id for g in chosen]
    position = (session.scalar(select(func.max(PolicyRing.position))
                               .where(PolicyRing.policy_id == pol.id)) or 0) + 1
    session.add(PolicyRing(policy_id=pol.id, position=position, name=name,
                           group_ids=json.dumps(ids), delay_minutes=delay_minutes,
                           min_success_rate=min_success_rate, gate=gate))
    session.flush()
    audit.record(session, who, "ring.add", f"{pol.name}/{name}",
                 f"groups {', '.join(g.name for g in chosen)}"
                 + ("; manual gate" if gate == "manual" else ""), source=source)
    return {"policy": pol.name, "rings": list_rings(session, pol.name)}


def list_rings(session: Session, policy: str) -> list[dict[str, Any]]:
    pol = get_policy(session, policy)
    names = dict(session.execute(select(Group.id, Group.name)).tuples().all())
    return [{"position": n, "name": r.name,
             "groups": [names.get(g, f"#{g}") for g in sorted(r.group_ids)],
             "delay_minutes": r.delay_minutes, "min_success_rate": r.min_success_rate,
             "gate": r.gate}
            for n, r in enumerate(load(session, pol.id), 1)]


def delete_ring(session: Session, policy: str, name: str, who: str,
                source: str = "cli") -> None:
    pol = get_policy(session, policy)
    removed = session.execute(delete(PolicyRing).where(
        PolicyRing.policy_id == pol.id, PolicyRing.name == name)).rowcount  # type: ignore[attr-defined]
    if not removed:
        raise NotFoundError(f"policy {pol.name} has no ring named {name!r}")
    audit.record(session, who, "ring.delete", f"{pol.name}/{name}", source=source)


def _ring(session: Session, policy_id: int, policy: str, name: str) -> PolicyRing:
    ring = session.scalar(select(PolicyRing).filter_by(policy_id=policy_id,
                                                       name=(name or "").strip()))
    if ring is None:
        raise NotFoundError(f"policy {policy} has no ring named {name!r}")
    return ring


def edit_ring(session: Session, policy: str, name: str, groups: list[str] | None, who: str,
              delay_minutes: int, min_success_rate: int, gate: str = "rate",
              source: str = "cli") -> dict[str, Any]:
    """Change a ring's groups, delay and gate; its place in the order stays."""
    pol = get_policy(session, policy)
    ring = _ring(session, pol.id, pol.name, name)
    gate = _checked(delay_minutes, min_success_rate, gate)
    chosen = groups_by_names(session, groups)
    ring.group_ids = json.dumps([g.id for g in chosen])
    ring.delay_minutes, ring.min_success_rate, ring.gate = delay_minutes, min_success_rate, gate
    session.flush()
    audit.record(session, who, "ring.edit", f"{pol.name}/{ring.name}",
                 f"groups {', '.join(g.name for g in chosen)}; delay {delay_minutes} min; "
                 + ("manual gate" if gate == "manual" else f"gate {min_success_rate} %"),
                 source=source)
    return {"policy": pol.name, "rings": list_rings(session, pol.name)}


def move_ring(session: Session, policy: str, name: str, offset: int, who: str,
              source: str = "cli") -> dict[str, Any]:
    """Move a ring `offset` places (-1: earlier, +1: later) in the policy's order; the first
    ring is the pilot, so this decides which groups get a cycle's installs first."""
    pol = get_policy(session, policy)
    ring = _ring(session, pol.id, pol.name, name)
    order = list(session.scalars(select(PolicyRing).where(PolicyRing.policy_id == pol.id)
                                 .order_by(PolicyRing.position, PolicyRing.id)))
    at = order.index(ring)
    to = at + offset
    if not 0 <= to < len(order):
        raise UserError(f"ring {ring.name} is already the {'first' if offset < 0 else 'last'}")
    order.insert(to, order.pop(at))
    for n, row in enumerate(order, 1):
        row.position = n
    session.flush()
    audit.record(session, who, "ring.move", f"{pol.name}/{ring.name}",
                 f"order {', '.join(r.name for r in order)}", source=source)
    return {"policy": pol.name, "rings": list_rings(session, pol.name)}
