"""Group tree lookups shared by every view that offers "include subgroups"."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Group
from patchflow.errors import NotFoundError, UserError


def group_by_name(session: Session, name: str) -> Group:
    group = session.scalar(select(Group).filter_by(name=name))
    if group is None:
        raise NotFoundError(f"no group named {name!r}")
    return group


def groups_by_names(session: Session, names: list[str] | None) -> list[Group]:
    """The groups of a `--groups G1,G2` list, each once, in the order given; an empty list is a
    usage error (approvals, approval rules and rings all need at least one group)."""
    wanted = list(dict.fromkeys(n.strip() for n in names or [] if n.strip()))
    if not wanted:
        raise UserError("--groups names no group: give --groups G1,G2")
    return [group_by_name(session, name) for name in wanted]


def descendant_ids(session: Session, group_id: int) -> list[int]:
    """The group and all its subgroups; the tree is small, so one query and a walk in memory."""
    children: dict[int | None, list[int]] = {}
    for gid, parent in session.execute(select(Group.id, Group.parent_id)):
        children.setdefault(parent, []).append(gid)
    found: list[int] = []
    stack = [group_id]
    while stack:
        gid = stack.pop()
        if gid in found:
            continue  # defensive: a cycle must not hang a report
        found.append(gid)
        stack.extend(children.get(gid, []))
    return found


def group_ids(session: Session, name: str, subgroups: bool) -> list[int]:
    group = group_by_name(session, name)
    return descendant_ids(session, group.id) if subgroups else [group.id]
