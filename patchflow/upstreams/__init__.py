"""Upstream connectors: one module per kind of upstream, all implementing the protocol of
base.py (a patch server's upstreams) or of feed.py (the vulnerability feeds), and the
registries that map kinds to them.

Server validation (patchflow.catalog.servers), the init wizard (patchflow.ops.setup), the console's
upstream choices and the sync flow read this registry; nothing outside a connector asks which
upstream a server has. Adding an upstream is one module, its tests and one line in
`_connector_registry` (`_feed_registry` for a feed).

The registries are built on first use rather than on import: the connectors use the sync
service, whose content fetch uses this package's clients (replica_client, wsus_client), so
importing a client must not import every connector; and the feeds, which no patch server
setting names, are not imported where only the `--upstream` choices are read.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy.orm import Session

from models import PatchServer
from patchflow.errors import UserError
from patchflow.upstreams.base import Choice, Connector, Param, Plan
from patchflow.upstreams.feed import FeedConnector

__all__ = ["CONNECTORS", "FEEDS", "Choice", "Connector", "FeedConnector", "Param", "Plan",
           "apply", "check", "choice_of", "choices", "content_host", "content_upstream",
           "defaults", "forms", "get", "kinds_for", "reset", "syncs_from", "unsupported",
           "validate"]

# Read as module attributes (`upstreams.CONNECTORS`, `from patchflow.upstreams import FEEDS`);
# module __getattr__ builds them on first use.
CONNECTORS: dict[str, Connector]
FEEDS: dict[str, FeedConnector]


@cache
def _connector_registry() -> dict[str, Connector]:
    from patchflow.upstreams import msrc, replica, winget, wsus, wsusscn2

    # In sync order: an upstream's own connector before its companions.
    return {c.kind: c for c in (
        msrc.CONNECTOR,
        wsusscn2.CONNECTOR,
        wsus.CONNECTOR,
        replica.CONNECTOR,
        winget.CONNECTOR,
    )}


@cache
def _feed_registry() -> dict[str, FeedConnector]:
    from patchflow.upstreams import kev, mozilla, nvd

    # The vulnerability feeds: upstreams of the whole instance (patchflow/upstreams/feed.py),
    # in sync order.
    return {c.kind: c for c in (
        kev.CONNECTOR,
        mozilla.CONNECTOR,
        nvd.CONNECTOR,
    )}


def __getattr__(name: str) -> Any:
    if name == "CONNECTORS":
        return _connector_registry()
    if name == "FEEDS":
        return _feed_registry()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _connectors() -> list[Connector]:
    return list(_connector_registry().values())


def get(kind: str) -> Connector:
    return _connector_registry()[kind]


def choices(wizard: bool = False) -> list[Choice]:
    """Every way to write `--upstream` (only those `patchflow init` offers with `wizard`)."""
    found: dict[str, Choice] = {}
    for connector in _connectors():
        for choice in connector.choices:
            if not wizard or choice.wizard:
                found.setdefault(choice.key, choice)
    return list(found.values())


def forms(hints: bool = False, wizard: bool = False) -> str:
    """Every way to write `--upstream` (those `patchflow init` offers with `wizard`), for help
    texts: a new connector shows up by itself."""
    return " | ".join(c.form + (f" ({c.hint})" if hints and c.hint else "")
                      for c in choices(wizard))


def _forms() -> str:
    found = [c.form for c in choices()]
    return ", ".join(found[:-1]) + " or " + found[-1] if len(found) > 1 else found[0]


def _owner(upstream: str) -> Connector | None:
    return next((c for c in _connectors() if c.choices and c.accepts(upstream)), None)


def validate(upstream: str, session: Session, own_name: str) -> str:
    """An `--upstream` value, checked by the connector it names."""
    owner = _owner(upstream)
    if owner is None:
        raise UserError(f"invalid upstream {upstream!r}: use {_forms()}")
    return owner.validate(upstream, session, own_name)


def defaults(server: PatchServer) -> None:
    """A new patch server starts with every kind's defaults, so switching its upstream later
    asks only for what that upstream cannot default (a WSUS URL, a replication token)."""
    for connector in _connectors():
        connector.defaults(server)


def apply(server: PatchServer, opts: Any, session: Session) -> None:
    """A change of settings (a ServerOptions): the upstream it names is checked by its
    connector, every connector takes (or refuses) the settings only it has, then the server's
    upstream refuses what it lacks. A connector whose origin changed starts over: positions in
    another upstream mean nothing here."""
    origins = [c.origin(server) for c in _connectors()]
    if opts.upstream is not None:
        server.upstream = validate(opts.upstream, session, server.name)
    for connector in _connectors():
        connector.apply(server, opts)
    check(server)
    for connector, before in zip(_connectors(), origins, strict=True):
        if connector.origin(server) != before:
            connector.reset(server)


def reset(server: PatchServer) -> None:
    """Every connector forgets its position in its upstream (the server's filters changed:
    what was read before was filtered the old way)."""
    for connector in _connectors():
        connector.reset(server)


def check(server: PatchServer) -> None:
    """The settings the server's upstream needs, once a change is applied."""
    owner = _owner(server.upstream or "")
    if owner is not None:
        owner.check(server)


def syncs_from(server: PatchServer, other: str) -> bool:
    """Whether `server` gets its patches from patch server `other` (which cannot go then)."""
    return any(c.syncs_from(server, other) for c in _connectors())


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
    own = [c for c in _connectors() if not c.companion and c.selected(server)]
    if not own:
        return []
    companions = [] if any(c.brings_third_party for c in own) else \
        [c for c in _connectors() if c.companion]
    return [c.kind for c in own + companions]


def unsupported(server: PatchServer) -> str:
    return f"upstream {server.upstream!r} is not supported by this version yet"
