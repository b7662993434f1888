"""Changing the group tree: rename, move under another parent (nest or un-nest), delete, and
move several endpoints into a group at once.

Adding a group is patchflow.fleet.add_group (the CLI's `groups add`). The rules kept here: a
name stays unique and valid, a group never ends up under itself (the tree stays a tree), and
deleting a group with subgroups is refused while its endpoints move up to its parent (or
become ungrouped) instead of vanishing from every group view.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import Endpoint, Group
from patchflow.errors import UserError
from patchflow.fleet.endpoints import get_endpoint
from patchflow.fleet.groups import descendant_ids, group_by_name
from patchflow.fleet.tree import check_new_group_name


def rename_group(session: Session, name: str, new_name: str) -> Group:
    group = group_by_name(session, name)
    new_name = (new_name or "").strip()
    if new_name == group.name:
        return group
    check_new_group_name(session, new_name)
    group.name = new_name
    session.flush()
    return group


def set_parent(session: Session, name: str, parent: str | None) -> Group:
    """Put a group under `parent` (None or '': a top-level group)."""
    group = group_by_name(session, name)
    if not parent:
        group.parent_id = None
    else:
        target = group_by_name(session, parent)
        if target.id in descendant_ids(session, group.id):
            raise UserError(f"group {name!r} cannot go under {parent!r}: "
                            f"{parent!r} is {name!r} itself or one of its subgroups")
        group.parent_id = target.id
    session.flush()
    return group


def delete_group(session: Session, name: str) -> int:
    """Delete an empty-of-subgroups group; its endpoints move to its parent (or become
    ungrouped). Returns how many endpoints moved."""
    group = group_by_name(session, name)
    children = list(session.scalars(select(Group.name).where(Group.parent_id == group.id)
                                    .order_by(Group.name)))
    if children:
        raise UserError(f"group {name!r} has subgroups ({', '.join(children)}): "
                        "delete or move them first")
    moved = session.execute(update(Endpoint).where(Endpoint.group_id == group.id)
                            .values(group_id=group.parent_id)).rowcount or 0
    session.delete(group)
    session.flush()
    return int(moved)


def move_endpoints(session: Session, hostnames: Sequence[str], group: str) -> list[str]:
    """Move every named endpoint into `group`; all or nothing (an unknown name refuses)."""
    if not hostnames:
        raise UserError("no endpoints chosen: tick the endpoints to move")
    target = group_by_name(session, group)
    endpoints = [get_endpoint(session, h) for h in hostnames]
    for endpoint in endpoints:
        endpoint.group_id = target.id
    session.flush()
    return [e.hostname for e in endpoints]
