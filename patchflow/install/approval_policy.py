"""What a policy approves, and why: pure functions over plain records, no database.

A policy's approved set = the manual approvals for its groups + what its groups' automatic
approval rules match − declined patches. Every approved patch carries the reasons it is in
the set ("rule 'critical-security': Critical, Security Updates", "approved by alice on …"),
because the plan, the cycle's artifacts and `rules preview` all show them. The database side
(patchflow.install.approval_rules) only loads these records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

from sources.filters import Filters, product_allowed

NO_VULN_DATA = "no vulnerability data yet (`patchflow feeds sync`): exploited is unknown"


@dataclass(frozen=True)
class RuleSpec:
    name: str
    group_ids: frozenset[int]
    severities: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    exploited: bool = False
    delay_days: int = 0
    deadline_days: int | None = None


@dataclass(frozen=True)
class PatchFacts:
    id: int
    label: str
    severity: str
    category: str
    products: tuple[str, ...]
    package_id: str | None = None
    release_date: dt.date | None = None
    # True / False once vulnerability data exists; None while no feed has run (the hook for
    # the vulnerability feeds: `--exploited` rules match nothing until then, and say so).
    exploited: bool | None = None


@dataclass(frozen=True)
class ManualApproval:
    patch_id: int
    group_id: int
    why: str
    deadline: dt.date | None = None


@dataclass
class Approved:
    patch_id: int
    why: list[str] = field(default_factory=list)
    deadline: dt.date | None = None

    def add(self, why: str, deadline: dt.date | None) -> None:
        if why not in self.why:
            self.why.append(why)
        if deadline is not None and (self.deadline is None or deadline < self.deadline):
            self.deadline = deadline


@dataclass(frozen=True)
class Match:
    """A rule's verdict on one patch: `why` when it matches, else `miss` says what failed."""

    why: str | None = None
    miss: str | None = None
    deadline: dt.date | None = None


def match(rule: RuleSpec, patch: PatchFacts, today: dt.date) -> Match:
    parts: list[str] = []
    if rule.severities:
        if patch.severity not in rule.severities:
            return Match(miss=f"severity {patch.severity}")
        parts.append(patch.severity)
    if rule.categories:
        if patch.category not in rule.categories:
            return Match(miss=f"category {patch.category}")
        parts.append(patch.category)
    if rule.products:
        wanted = Filters.from_lists(products=list(rule.products))
        hits = [p for p in patch.products if product_allowed(p, wanted, patch.package_id)]
        if not hits:
            return Match(miss="product " + (", ".join(patch.products) or "unknown"))
        parts.append(hits[0])
    if rule.exploited:
        if patch.exploited is None:
            return Match(miss=NO_VULN_DATA)
        if not patch.exploited:
            return Match(miss="no CVE exploited in the wild")
        parts.append("exploited in the wild")
    approved_on = today
    if rule.delay_days:
        if patch.release_date is None:
            return Match(miss="release date unknown (the rule waits "
                         f"{rule.delay_days} days after release)")
        approved_on = patch.release_date + dt.timedelta(days=rule.delay_days)
        if approved_on > today:
            return Match(miss=f"released {patch.release_date}: approved from {approved_on}")
        parts.append(f"released {patch.release_date}, {rule.delay_days}+ days ago")
    deadline = (approved_on + dt.timedelta(days=rule.deadline_days)
                if rule.deadline_days is not None else None)
    return Match(why=f"rule '{rule.name}': " + (", ".join(parts) or "any patch"),
                 deadline=deadline)


def approved_set(
    group_ids: Iterable[int],
    manual: Iterable[ManualApproval],
    rules: Iterable[RuleSpec],
    patches: Iterable[PatchFacts],
    declined: set[int],
    today: dt.date,
) -> dict[int, Approved]:
    """Patch id → Approved for endpoints whose group chain (the group and its ancestors: an
    approval for a group covers its subgroups) is `group_ids`."""
    chain = set(group_ids)
    out: dict[int, Approved] = {}
    for approval in manual:
        if approval.group_id in chain and approval.patch_id not in declined:
            out.setdefault(approval.patch_id, Approved(approval.patch_id)).add(
                approval.why, approval.deadline)
    applicable = [r for r in rules if r.group_ids & chain]
    for patch in patches:
        if patch.id in declined:
            continue
        for rule in applicable:
            verdict = match(rule, patch, today)
            if verdict.why:
                out.setdefault(patch.id, Approved(patch.id)).add(verdict.why, verdict.deadline)
    return out
