"""Upstream connectors: one module per kind of upstream, all implementing the protocol of
base.py (a patch server's upstreams) or of feed.py (the vulnerability feeds), and the
registries that map kinds to them.

Server validation (patchflow.servers), the init wizard (patchflow.setup), the console's upstream
choices and the sync flow read this registry; nothing outside a connector asks which upstream a
server has. Adding an upstream is one module, its tests and one line in `CONNECTORS`
(`FEEDS` for a feed).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from models import PatchServer
from patchflow.errors import UserError
from patchflow.upstreams import kev, mozilla, msrc, nvd, replica, winget, wsus, wsusscn2
from patchflow.upstreams.base import Choice, Connector, Plan
from patchflow.upstreams.feed import FeedConnector

__all__ = ["CONNECTORS", "FEEDS", "Choice", "Connector", "FeedConnector", "Plan", "apply",
           "check", "choice_of", "choices", "content_host", "content_upstream", "get",
           "kinds_for", "syncs_from", "unsupported", "validate"]

# In sync order: an upstream's own connector before its companions.
CONNECTORS: dict[str, Connector] = {c.kind: c for c in (
    msrc.CONNECTOR,
    wsusscn2.CONNECTOR,
    wsus.CONNECTOR,
    replica.CONNECTOR,
    winget.CONNECTOR,
)}

# The vulnerability feeds: upstreams of the whole instance (patchflow/upstreams/feed.py), in
# sync order.
FEEDS: dict[str, FeedConnector] = {c.kind: c for c in (
    kev.CONNECTOR,
    mozilla.CONNECTOR,
    nvd.CONNECTOR,
)}


def get(kind: str) -> Connector:
    return CONNECTORS[kind]


def choices(wizard: bool = False) -> list[Choice]:
    """Every way to write `--upstream` (only those `patchflow init` offers with `wizard`)."""
    found: dict[str, Choice] = {}
    for connector in CONNECTORS.values():
        for choice in connector.choices:
            if not wizard or choice.wizard:
                found.setdefault(choice.key, choice)
    return list(found.values())


def _forms() -> str:
    forms = [c.form for c in choices()]
    return ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]


def _owner(upstream: str) -> Connector | None:
    return next((c for c in CONNECTORS.values() if c.choices and c.accepts(upstream)), None)


def validate(upstream: str, session: Session, own_name: str) -> str:
    """An `--upstream` value, checked by the connector it names."""
    owner = _owner(upstream)
    if owner is None:
        raise UserError(f"invalid upstream {upstream!r}: use {_forms()}")
    return owner.validate(upstream, session, own_name)


def apply(server: PatchServer, opts: object) -> None:
    """Every connector takes (or refuses) the settings only it has; then the server's
    upstream refuses what it lacks."""
    for connector in CONNECTORS.values():
        connector.apply(server, opts)
    check(server)


def check(server: PatchServer) -> None:
    """The settings the server's upstream needs, once a change is applied."""
    owner = _owner(server.upstream or "")
    if owner is not None:
        owner.check(server)


def syncs_from(server: PatchServer, other: str) -> bool:
    """Whether `server` gets its patches from patch server `other` (which cannot go then)."""
    return any(c.syncs_from(server, other) for c in CONNECTORS.values())


def content_upstream(server: PatchServer) -> Any:
    """The patchflow upstream the server's content comes from (an Upstream), or None."""
    owner = _owner(server.upstream or "")
    return owner.content_upstream(server) if owner is not None else None


def content_host(server: PatchServer) -> str | None:
    """The base URL of the server's upstream when its content URLs point there, or None."""
    owner = _owner(server.upstream or "")
    return owner.content_host(server) if owner is not None else None


def choice_of(upstream: str) -> Choice | None:
    """The choice an `--upstream` value was made with (the console's radio button)."""
    return next((c for c in choices() if c.matches(upstream)), None)


def kinds_for(server: PatchServer) -> list[str]:
    """The connectors that sync this server, in order: the upstream's own, then companions
    (third-party packages) unless that upstream brings them itself."""
    own = [c for c in CONNECTORS.values() if not c.companion and c.selected(server)]
    if not own:
        return []
    companions = [] if any(c.brings_third_party for c in own) else \
        [c for c in CONNECTORS.values() if c.companion]
    return [c.kind for c in own + companions]


def unsupported(server: PatchServer) -> str:
    return f"upstream {server.upstream!r} is not supported by this version yet"
