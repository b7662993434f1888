"""The install plan of one cycle: which patch goes to which endpoints of the policy, and why.

The plan is the policy's approved set (patchflow.install.approval_policy) applied to what the last
scan found missing on the policy's endpoints. Endpoints not offered installs are left out with a
note (roaming ones, as for automatic install: an administrator installs on them deliberately), and
so are patches whose EULA nobody accepted (a cycle cannot accept a licence for anyone).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Endpoint, MissingPatch, Policy
from models.base import utcnow
from patchflow.cycle import rings
from patchflow.errors import UserError
from patchflow.fleet.tree import Tree
from patchflow.install.approval_policy import approved_set
from patchflow.install.approval_rules import load_facts, load_manual, load_specs
from patchflow.install.eula import patch_label, unaccepted
from patchflow.scanning.missing_query import declined_set, not_declined

RING = "all"  # the one ring of a policy without rings: every endpoint of the policy


@dataclass
class Plan:
    rows: list[dict[str, Any]] = field(default_factory=list)
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (patch_id, endpoint_id)
    notes: list[str] = field(default_factory=list)
    endpoints: int = 0
    # Ring by ring, in order: [{"name", "delay_minutes", "min_success_rate", "gate", "pairs"}].
    rings: list[dict[str, Any]] = field(default_factory=list)


def get_policy(session: Session, name: str) -> Policy:
    policy = session.scalar(select(Policy).where(Policy.name == (name or "").strip()))
    if policy is None:
        raise UserError(f"no policy named {name!r} (`patchflow policies list`)")
    return policy


def policy_endpoints(session: Session, policy: Policy) -> list[Any]:
    """Active endpoints whose effective policy is `policy`: id, hostname, group_id, roaming."""
    tree = Tree.load(session)
    rows = session.execute(
        select(Endpoint.id, Endpoint.hostname, Endpoint.group_id, Endpoint.roaming)
        .where(Endpoint.revoked.is_(False), Endpoint.replaces_endpoint_id.is_(None))
        .order_by(Endpoint.hostname)).all()
    return [r for r in rows if tree.effective_policy(r.group_id) == policy.id]


def _chain(tree: Tree, group_id: int | None) -> set[int]:
    """The group and its ancestors: an approval for a group covers its subgroups."""
    found: set[int] = set()
    while group_id is not None and group_id not in found:
        found.add(group_id)
        group_id = tree.parents.get(group_id)
    return found


def build_plan(session: Session, policy: Policy, today: dt.date | None = None) -> Plan:
    today = today or utcnow().date()
    plan = Plan()
    endpoints = policy_endpoints(session, policy)
    roaming = [e for e in endpoints if e.roaming]
    if roaming:
        plan.notes.append(f"{len(roaming)} roaming endpoint(s) left out: install on them "
                          "deliberately (`patchflow install now`)")
    endpoints = [e for e in endpoints if not e.roaming]
    tree = Tree.load(session)
    specs = rings.load(session, policy.id) or [rings.RingSpec(RING, frozenset())]
    ring_of = {e.id: rings.ring_of(_chain(tree, e.group_id), specs) if specs[0].group_ids
               else RING for e in endpoints}
    outside = [e for e in endpoints if ring_of[e.id] is None]
    if outside:
        plan.notes.append(f"{len(outside)} endpoint(s) in no ring left out: "
                          + ", ".join(e.hostname for e in outside[:10]))
    endpoints = [e for e in endpoints if ring_of[e.id] is not None]
    plan.rings = [{"name": r.name, "delay_minutes": r.delay_minutes,
                   "min_success_rate": r.min_success_rate, "gate": r.gate, "pairs": []}
                  for r in specs]
    plan.endpoints = len(endpoints)
    if not endpoints:
        return plan
    declined = declined_set(session)
    ids = [e.id for e in endpoints]
    missing: list[tuple[int, int]] = []
    for start in range(0, len(ids), 2000):
        missing.extend(session.execute(
            select(MissingPatch.patch_id, MissingPatch.endpoint_id)
            .where(MissingPatch.endpoint_id.in_(ids[start:start + 2000]), not_declined())
        ).tuples().all())
    facts = {f.id: f for f in load_facts(session, {p for p, _e in missing})}
    manual, rules = load_manual(session), load_specs(session)
    group_of = {e.id: e.group_id for e in endpoints}
    approved_by_group: dict[int | None, dict[int, Any]] = {}
    for gid in set(group_of.values()):
        approved_by_group[gid] = approved_set(_chain(tree, gid), manual, rules,
                                              facts.values(), declined, today)
    blocked = {p.id: p for p in unaccepted(session, {p for p, _e in missing})}
    by_patch: dict[int, list[int]] = {}
    why: dict[int, list[str]] = {}
    deadline: dict[int, dt.date | None] = {}
    for patch_id, endpoint_id in missing:
        approval = approved_by_group[group_of[endpoint_id]].get(patch_id)
        if approval is None:
            continue
        if patch_id in blocked:
            continue
        by_patch.setdefault(patch_id, []).append(endpoint_id)
        reasons = why.setdefault(patch_id, [])
        reasons.extend(w for w in approval.why if w not in reasons)
        if approval.deadline and (deadline.get(patch_id) is None
                                  or approval.deadline < deadline[patch_id]):  # type: ignore[operator]
            deadline[patch_id] = approval.deadline
    approved_blocked = sorted({p for p, e in missing if p in blocked
                               and approved_by_group[group_of[e]].get(p) is not None})
    if approved_blocked:
        plan.notes.append("EULA not accepted, not installed: "
                          + ", ".join(patch_label(blocked[p]) for p in approved_blocked))
    names = {e.id: e.hostname for e in endpoints}
    for ring in plan.rings:
        for patch_id in sorted(by_patch, key=lambda p: facts[p].label):
            f = facts[patch_id]
            hosts = sorted((e for e in by_patch[patch_id] if ring_of[e] == ring["name"]),
                           key=lambda e: names[e])
            if not hosts:
                continue
            plan.rows.append({
                "ring": ring["name"], "patch": f.label, "patch_id": patch_id,
                "kb": f.label if f.package_id is None and f.label.upper().startswith("KB")
                else None,
                "package_id": f.package_id, "endpoints": [names[e] for e in hosts],
                "why": "; ".join(why[patch_id]),
                "deadline": deadline[patch_id].isoformat() if deadline.get(patch_id) else None,
            })
            ring["pairs"].extend((patch_id, e) for e in hosts)
            plan.pairs.extend((patch_id, e) for e in hosts)
    return plan
