"""Groups and the group tree: groups nest, and a group without a policy inherits the nearest
ancestor's."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Endpoint, Group, Policy
from patchflow.errors import UserError
from patchflow.fleet.groups import group_by_name
from patchflow.fleet.tokens import validate_name


def check_new_group_name(session: Session, name: str) -> None:
    """The rule for a group's name, whether it is added or renamed: valid, and not taken."""
    validate_name(name, "group")
    if session.scalar(select(Group.id).where(Group.name == name)) is not None:
        raise UserError(f"a group named {name!r} already exists")


def add_group(session: Session, name: str, parent: str | None = None) -> Group:
    check_new_group_name(session, name)
    parent_id = group_by_name(session, parent).id if parent else None
    group = Group(name=name, parent_id=parent_id)
    session.add(group)
    session.flush()
    return group


@dataclass
class Tree:
    """The whole group tree in memory: it is small, and every listing needs all of it."""

    names: dict[int, str] = field(default_factory=dict)
    parents: dict[int, int | None] = field(default_factory=dict)
    own_policy: dict[int, int | None] = field(default_factory=dict)

    @classmethod
    def load(cls, session: Session) -> Tree:
        tree = cls()
        for gid, name, parent, policy in session.execute(
            select(Group.id, Group.name, Group.parent_id, Group.policy_id)
        ):
            tree.names[gid] = name
            tree.parents[gid] = parent
            tree.own_policy[gid] = policy
        return tree

    def effective_policy(self, group_id: int | None) -> int | None:
        """The nearest ancestor (the group itself first) that has a policy."""
        seen: set[int] = set()
        while group_id is not None and group_id not in seen:
            seen.add(group_id)
            if self.own_policy.get(group_id) is not None:
                return self.own_policy[group_id]
            group_id = self.parents.get(group_id)
        return None

    def ancestors(self, group_id: int | None) -> list[int]:
        """The group, its parent, and so on up to the top (a cycle ends the walk)."""
        found: list[int] = []
        while group_id is not None and group_id not in found:
            found.append(group_id)
            group_id = self.parents.get(group_id)
        return found

    def path(self, group_id: int) -> str:
        return "/".join(self.names.get(g, "?") for g in reversed(self.ancestors(group_id)))


def policy_names(session: Session) -> dict[int, str]:
    return dict(session.execute(select(Policy.id, Policy.name)).tuples().all())


def list_groups(session: Session) -> list[dict[str, Any]]:
    tree = Tree.load(session)
    policies = policy_names(session)
    counts = dict(
        session.execute(
            select(Endpoint.group_id, func.count()).group_by(Endpoint.group_id)
        ).tuples().all()
    )
    rows = []
    for gid, name in tree.names.items():
        parent = tree.parents[gid]
        own = tree.own_policy[gid]
        effective = tree.effective_policy(gid)
        rows.append({
            "name": name,
            "parent": tree.names.get(parent) if parent else None,
            "path": tree.path(gid),
            "policy": policies.get(own) if own else None,
            "effective_policy": policies.get(effective) if effective else None,
            "endpoints": counts.get(gid, 0),
        })
    rows.sort(key=lambda r: str(r["path"]).lower())
    return rows


def endpoint_policy(session: Session, endpoint_id: int) -> Policy | None:
    """The policy that applies to an endpoint: its group's, or the nearest ancestor's."""
    group_id = session.scalar(select(Endpoint.group_id).where(Endpoint.id == endpoint_id))
    policy_id = Tree.load(session).effective_policy(group_id)
    return session.get(Policy, policy_id) if policy_id else None
