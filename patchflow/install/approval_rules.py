"""Automatic approval rules in the database, and the records
patchflow.install.approval_policy needs.

`rules add/list/delete/preview` live here, plus the loaders that turn catalog rows, approvals
and vulnerability data into the pure records the approval policy works on. `exploited_ids` is
the one place that reads the vulnerability feeds: until any feed has stored a CVE it returns
None and `--exploited` rules match nothing, saying why.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models import (
    ApprovalRule,
    Endpoint,
    Group,
    MissingPatch,
    Patch,
    PatchApproval,
    PatchCve,
    PatchProduct,
    PatchVulnerability,
    Vulnerability,
)
from models.base import utcnow
from patchflow.errors import NotFoundError, UserError
from patchflow.fleet.groups import descendant_ids, groups_by_names
from patchflow.install.approval_policy import (
    NO_VULN_DATA,
    ManualApproval,
    PatchFacts,
    RuleSpec,
    match,
)
from patchflow.install.approvals import label
from patchflow.ops import audit
from patchflow.scanning.missing_query import MissingFilters, declined_set
from sources.filters import package_name

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_DAYS = 3650


def _days(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if not 0 <= value <= MAX_DAYS:
        raise UserError(f"{what} must be between 0 and {MAX_DAYS}")
    return value


def _list(values: Iterable[str] | None) -> str | None:
    items = [v for v in values or () if v]
    return json.dumps(items) if items else None


def _load_list(text: str | None) -> tuple[str, ...]:
    return tuple(json.loads(text)) if text else ()


def add_rule(session: Session, name: str, groups: list[str] | None, who: str, *,
             severities: list[str] | None = None, categories: list[str] | None = None,
             products: list[str] | None = None, exploited: bool = False,
             delay_days: int = 0, deadline_days: int | None = None,
             source: str = "cli") -> dict[str, Any]:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise UserError(f"invalid rule name {name!r}: letters, digits, '.', '_' and '-', "
                        "at most 64")
    if session.scalar(select(ApprovalRule.id).where(ApprovalRule.name == name)) is not None:
        raise UserError(f"a rule named {name!r} already exists (`patchflow rules delete "
                        f"{name}` first)")
    group_ids = [g.id for g in groups_by_names(session, groups)]
    vocab = MissingFilters(severity=tuple(severities or ()),
                           category=tuple(categories or ())).normalized()
    rule = ApprovalRule(
        name=name, group_ids=json.dumps(group_ids), severities=_list(vocab.severity),
        categories=_list(vocab.category),
        products=_list(p.strip() for p in products or [] if p.strip()),
        exploited=exploited, delay_days=_days(delay_days, "--delay-days") or 0,
        deadline_days=_days(deadline_days, "--deadline-days"), created_by=who[:128],
        created_at=utcnow())
    session.add(rule)
    session.flush()
    audit.record(session, who, "rule.add", name, describe(rule, _group_names(session)),
                 source=source)
    return rule_to_dict(rule, _group_names(session))


def _group_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Group.id, Group.name)).tuples().all())


def spec(rule: ApprovalRule) -> RuleSpec:
    return RuleSpec(name=rule.name, group_ids=frozenset(json.loads(rule.group_ids)),
                    severities=_load_list(rule.severities),
                    categories=_load_list(rule.categories), products=_load_list(rule.products),
                    exploited=rule.exploited, delay_days=rule.delay_days,
                    deadline_days=rule.deadline_days)


def describe(rule: ApprovalRule, names: dict[int, str]) -> str:
    s = spec(rule)
    parts = [f"groups {', '.join(names.get(g, f'#{g}') for g in sorted(s.group_ids))}"]
    for what, values in (("severity", s.severities), ("category", s.categories),
                         ("products", s.products)):
        if values:
            parts.append(f"{what} {', '.join(values)}")
    if s.exploited:
        parts.append("exploited only")
    if s.delay_days:
        parts.append(f"{s.delay_days} days after release")
    if s.deadline_days is not None:
        parts.append(f"deadline {s.deadline_days} days after approval")
    return "; ".join(parts)


def rule_to_dict(rule: ApprovalRule, names: dict[int, str]) -> dict[str, Any]:
    s = spec(rule)
    return {"name": rule.name, "groups": [names.get(g, f"#{g}") for g in sorted(s.group_ids)],
            "severity": list(s.severities), "category": list(s.categories),
            "products": list(s.products), "exploited": s.exploited,
            "delay_days": s.delay_days, "deadline_days": s.deadline_days,
            "created_by": rule.created_by, "created_at": rule.created_at.isoformat(),
            "description": describe(rule, names)}


def get_rule(session: Session, name: str) -> ApprovalRule:
    rule = session.scalar(select(ApprovalRule).where(ApprovalRule.name == (name or "").strip()))
    if rule is None:
        raise NotFoundError(f"no approval rule named {name!r}")
    return rule


def list_rules(session: Session) -> list[dict[str, Any]]:
    names = _group_names(session)
    return [rule_to_dict(r, names)
            for r in session.scalars(select(ApprovalRule).order_by(ApprovalRule.name))]


def delete_rule(session: Session, name: str, who: str, source: str = "cli") -> None:
    rule = get_rule(session, name)
    session.execute(delete(ApprovalRule).where(ApprovalRule.id == rule.id))
    audit.record(session, who, "rule.delete", rule.name, source=source)


def load_specs(session: Session) -> list[RuleSpec]:
    return [spec(r) for r in session.scalars(select(ApprovalRule).order_by(ApprovalRule.name))]


def load_manual(session: Session) -> list[ManualApproval]:
    return [ManualApproval(a.patch_id, a.group_id, a.reason or f"approved by {a.approved_by}",
                           a.deadline) for a in session.scalars(select(PatchApproval))]


def exploited_ids(session: Session) -> set[int] | None:
    """Patches fixing a CVE some feed says is exploited in the wild; None without any data."""
    if session.scalar(select(Vulnerability.cve).limit(1)) is None:
        return None
    exploited = select(Vulnerability.cve).where(Vulnerability.exploited.is_(True))
    ids = set(session.scalars(select(PatchCve.patch_id).where(PatchCve.cve.in_(exploited))))
    ids.update(session.scalars(select(PatchVulnerability.patch_id)
                               .where(PatchVulnerability.cve.in_(exploited))))
    return ids


def load_facts(session: Session, patch_ids: Iterable[int] | None = None) -> list[PatchFacts]:
    """The records rules match on, for the given patches (None: the whole catalog)."""
    query = select(Patch).order_by(Patch.id)
    ids = None if patch_ids is None else sorted({int(i) for i in patch_ids})
    patches: list[Patch] = []
    if ids is None:
        patches = list(session.scalars(query))
    else:
        for start in range(0, len(ids), 2000):
            patches.extend(session.scalars(query.where(Patch.id.in_(ids[start:start + 2000]))))
    products: dict[int, list[str]] = {}
    for pid, name in session.execute(select(PatchProduct.patch_id, PatchProduct.product)):
        products.setdefault(pid, []).append(name)
    exploited = exploited_ids(session)
    return [PatchFacts(id=p.id, label=label(p), severity=p.severity, category=p.category,
                       products=tuple(products.get(p.id) or [package_name(p.title, p.version)]),
                       package_id=p.package_id, release_date=p.release_date,
                       exploited=None if exploited is None else p.id in exploited)
            for p in patches]


def preview_rule(session: Session, name: str, today: dt.date | None = None) -> dict[str, Any]:
    """What the rule would approve now, why, and on how many endpoints of its groups the patch
    is missing; declined patches are left out and counted."""
    rule = get_rule(session, name)
    s = spec(rule)
    today = today or utcnow().date()
    declined = declined_set(session)
    notes: list[str] = []
    if s.exploited and exploited_ids(session) is None:
        notes.append(f"--exploited: {NO_VULN_DATA}, so this rule matches nothing yet")
    endpoint_groups: set[int] = set()
    for gid in s.group_ids:
        endpoint_groups.update(descendant_ids(session, gid))
    missing = dict(session.execute(
        select(MissingPatch.patch_id, func.count())
        .join(Endpoint, Endpoint.id == MissingPatch.endpoint_id)
        .where(Endpoint.group_id.in_(endpoint_groups or {-1}), Endpoint.revoked.is_(False))
        .group_by(MissingPatch.patch_id)).tuples().all())
    rows: list[dict[str, Any]] = []
    skipped = 0
    titles = dict(session.execute(select(Patch.id, Patch.title)).tuples().all())
    for facts in load_facts(session):
        verdict = match(s, facts, today)
        if not verdict.why:
            continue
        if facts.id in declined:
            skipped += 1
            continue
        rows.append({"patch": facts.label, "patch_id": facts.id,
                     "package_id": facts.package_id, "title": titles.get(facts.id),
                     "severity": facts.severity, "category": facts.category,
                     "release_date": facts.release_date.isoformat() if facts.release_date
                     else None,
                     "deadline": verdict.deadline.isoformat() if verdict.deadline else None,
                     "endpoints_missing": int(missing.get(facts.id, 0)), "why": verdict.why})
    if skipped:
        notes.append(f"{skipped} matching patch(es) declined, left out")
    rows.sort(key=lambda r: (-r["endpoints_missing"], r["patch"]))
    return {"rule": rule_to_dict(rule, _group_names(session)), "approves": rows,
            "notes": notes}
