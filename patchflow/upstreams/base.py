"""The one protocol every upstream connector implements, and the small types it uses.

A connector knows one kind of upstream: which `--upstream` values pick it and how they are
checked, whether it runs for a given patch server, how to list what changed since what the
server holds (`plan_refs`, whose decision is a pure `plan` function in the connector's module),
and how to fetch, parse (with `sources/`) and store a batch of it through the sync service
(patchflow/catalog/syncing.py). Tasks and flows call connectors only through this protocol.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from models import PatchServer

Log = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]


@dataclass(frozen=True)
class Param:
    """What follows a choice's prefix, as the console's form asks for it."""

    field: str  # the form field holding it
    missing: str  # the message when that field is empty
    error_field: str = "upstream"  # the field the message is shown at
    whole: bool = False  # the field holds the whole value (a URL), prefix included


@dataclass(frozen=True)
class Choice:
    """One way to write `--upstream`: the console's radio button and the wizard's answer."""

    key: str  # the console's form value, and the setting itself when it has no parameter
    label: str  # shown in the console
    form: str  # how it is written after --upstream, for error messages
    wizard: bool = False  # offered by `patchflow init` for the local patch server
    prefix: str = ""  # the value starts with this and carries a parameter ("server:NAME")
    # ServerOptions fields that belong to this choice: the wizard asks for them, the console
    # reads them only with this choice.
    settings: tuple[str, ...] = ()
    summary: str = ""  # the wizard's confirmation line; {field} is replaced by its value
    hint: str = ""  # after the form in `--upstream`'s help ("another patchflow instance")
    # (ServerOptions field, environment variable): a secret the CLI takes from the environment
    # when the option is not given with this choice, so it stays off the command line.
    env: tuple[tuple[str, str], ...] = ()
    param: Param | None = None  # with a prefix: the console's field for what follows it

    def matches(self, upstream: str) -> bool:
        return upstream.startswith(self.prefix) if self.prefix else upstream == self.key

    def with_param(self, given: str) -> str:
        """The setting the console's parameter field stands for."""
        return given if self.param is not None and self.param.whole else self.prefix + given

    def param_of(self, upstream: str) -> str:
        """What the console's parameter field shows for a setting made with this choice."""
        return upstream if self.param is not None and self.param.whole else \
            upstream[len(self.prefix):]


@dataclass
class Plan:
    """What to fetch: JSON-able references (they travel between Prefect tasks) or why not."""

    refs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None


class Connector(Protocol):
    kind: str  # registry key; also the sync_documents source of what it stores
    label: str  # in log lines ("12 MSRC documents to check")
    task_name: str  # the Prefect task run name of its batches
    choices: tuple[Choice, ...]  # --upstream values that pick it (none: picked otherwise)
    companion: bool  # runs after the upstream's own connector (third-party packages)
    brings_third_party: bool  # its upstream serves third-party patches too (no companion)
    plans_ahead: bool  # lists documents in a task of its own before the batches
    batch_size: int  # references per batch task run

    def accepts(self, upstream: str) -> bool:
        """Whether an `--upstream` value names this kind."""

    def validate(self, upstream: str, session: Session, own_name: str) -> str:
        """The value, checked (UserError with one line otherwise)."""

    def apply(self, server: PatchServer, opts: Any) -> None:
        """Take and check the settings only this kind has (a ServerOptions; every connector
        sees every change, so it also refuses its settings on a server it does not sync)."""

    def check(self, server: PatchServer) -> None:
        """Settings this kind needs, once all of a change is applied (UserError otherwise)."""

    def defaults(self, server: PatchServer) -> None:
        """The settings only this kind has, as a new patch server starts with them."""

    def origin(self, server: PatchServer) -> Any:
        """What the position this kind keeps in its upstream is relative to (compared before
        and after a change of settings: a different value calls `reset`)."""

    def reset(self, server: PatchServer) -> None:
        """Forget the position kept in the upstream, so the next sync reads it from the start
        (its origin changed, or the server's filters did)."""

    def selected(self, server: PatchServer) -> bool:
        """Whether this connector syncs this patch server (companions excepted)."""

    def syncs_from(self, server: PatchServer, other: str) -> bool:
        """Whether `server` gets its patches from patch server `other` of this instance."""

    def content_upstream(self, server: PatchServer) -> Any:
        """The patchflow upstream to fetch this server's content from (an Upstream), or None:
        the vendor URLs of the catalog are used."""

    def content_host(self, server: PatchServer) -> str | None:
        """A server whose content URLs point at it (fetched with its TLS settings), or None."""

    def plan_refs(self, server_id: int) -> Plan:
        """What to fetch since what the server holds; source problems are returned."""

    def sync_batch(self, server_id: int, refs: list[dict[str, Any]] | None, done_before: int,
                   total: int, log: Log) -> dict[str, Any]:
        """Fetch, parse and store `refs` (None: the whole upstream); a result dict."""

    def summarise(self, results: list[dict[str, Any]]) -> tuple[str, str]:
        """The sync's status and one-line message, when this kind is the server's upstream."""


class ConnectorBase:
    """Defaults for the protocol's optional parts: an upstream named by a plain word, no
    settings of its own, no separate plan, the document summary of the sync service."""

    kind = ""
    label = ""
    task_name = ""
    choices: tuple[Choice, ...] = ()
    companion = False
    brings_third_party = False
    plans_ahead = False
    batch_size = 1

    def accepts(self, upstream: str) -> bool:
        return any(c.matches(upstream) for c in self.choices)

    def validate(self, upstream: str, session: Session, own_name: str) -> str:
        return upstream

    def apply(self, server: PatchServer, opts: Any) -> None:
        return None

    def check(self, server: PatchServer) -> None:
        return None

    def defaults(self, server: PatchServer) -> None:
        return None

    def origin(self, server: PatchServer) -> Any:
        return None

    def reset(self, server: PatchServer) -> None:
        return None

    def selected(self, server: PatchServer) -> bool:
        return self.accepts(server.upstream)

    def syncs_from(self, server: PatchServer, other: str) -> bool:
        return False

    def content_upstream(self, server: PatchServer) -> Any:
        return None

    def content_host(self, server: PatchServer) -> str | None:
        return None

    def plan_refs(self, server_id: int) -> Plan:
        return Plan()

    def summarise(self, results: list[dict[str, Any]]) -> tuple[str, str]:
        from patchflow.catalog.syncing import summary

        return summary(results)
