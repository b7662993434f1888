"""Automatic install after a scheduled scan, for policies with auto-install.

One job per policy (its auto-restart setting becomes the job's restart setting), holding every
(patch, endpoint) pair the scan found missing on that policy's endpoints. Roaming endpoints are
left out: they may be on a hotel network or a metered line, and an administrator installs on
them deliberately. Patches whose EULA nobody accepted are left out too, with a note, since a
schedule cannot accept a licence on anyone's behalf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Endpoint, MissingPatch, Policy
from models.bulk import chunks
from patchflow.fleet.transactions import write_transaction
from patchflow.fleet.tree import Tree
from patchflow.install.eula import patch_label, unaccepted
from patchflow.install.jobs import create_job
from patchflow.install.settings import InstallSettings
from patchflow.scanning.missing_query import not_declined


@dataclass
class AutoJobs:
    jobs: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def create_auto_jobs(endpoint_ids: Sequence[int], settings: InstallSettings | None = None
                     ) -> AutoJobs:
    """Create the jobs (not started); returns their ids and what was left out and why."""
    return write_transaction(None, lambda s: _create(s, list(endpoint_ids), settings))


def _create(session: Session, endpoint_ids: list[int], settings: InstallSettings | None
            ) -> AutoJobs:
    out = AutoJobs()
    policies = {p.id: p for p in session.scalars(
        select(Policy).where(Policy.auto_install.is_(True)))}
    if not policies or not endpoint_ids:
        return out
    tree = Tree.load(session)
    by_policy: dict[int, list[int]] = {}
    roaming = 0
    for chunk in chunks(endpoint_ids):
        for row in session.execute(select(Endpoint.id, Endpoint.group_id, Endpoint.roaming)
                                   .where(Endpoint.id.in_(chunk),
                                          Endpoint.revoked.is_(False))):
            policy_id = tree.effective_policy(row.group_id)
            if policy_id not in policies:
                continue
            if row.roaming:
                roaming += 1
                continue
            by_policy.setdefault(policy_id, []).append(row.id)
    if roaming:
        out.notes.append(f"{roaming} roaming endpoint(s) left out of automatic install")
    for policy_id, ids in sorted(by_policy.items()):
        policy = policies[policy_id]
        pairs: list[tuple[int, int]] = []
        for chunk in chunks(ids):
            pairs.extend(session.execute(
                select(MissingPatch.patch_id, MissingPatch.endpoint_id)
                .where(MissingPatch.endpoint_id.in_(chunk),
                       not_declined())
            ).tuples().all())
        blocked = {p.id: p for p in unaccepted(session, {p for p, _e in pairs})}
        if blocked:
            out.notes.append(
                f"policy {policy.name}: EULA not accepted, not installed automatically: "
                + ", ".join(patch_label(p) for p in blocked.values()))
            pairs = [(p, e) for p, e in pairs if p not in blocked]
        if not pairs:
            continue
        job = create_job(session, pairs, f"policy:{policy.name}", trigger="scheduled",
                         allow_restart=policy.auto_restart, settings=settings)
        out.jobs.append(job.id)
    return out
