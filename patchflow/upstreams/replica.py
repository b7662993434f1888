"""Another patchflow patch server as the upstream: on another instance (`--upstream
https://host:port`, over the replication API) or on this one (`--upstream server:NAME`).

Pages are fetched in revision order from the revision last applied; each page is checked whole
(sources.replica), then applied in one transaction together with the new revision, and the stop
flag is checked between pages. So a sync that is killed, stopped or refused halfway (a revoked
token, a page cut off) leaves every page before it applied and nothing of the failing one, and
the next sync continues from there. Third-party patches come from the upstream too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import requests
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import PatchServer
from models.db import session_scope
from models.enums import SyncStatus
from patchflow import config, crypto
from patchflow.catalog import syncing
from patchflow.catalog.replica_store import apply_local_page, apply_page
from patchflow.crypto import SecretError
from patchflow.errors import UserError
from patchflow.upstreams.base import Choice, ConnectorBase, Log, Param
from patchflow.upstreams.replica_client import Upstream
from sources.records import SourceError
from sources.replica import parse_page

SERVER_PREFIX = "server:"
REMOTE_PREFIX = "https://"


@dataclass
class ReplicaResult:
    pages: int = 0
    patches: int = 0
    revision: int = 0
    latest: int | None = None
    error: str | None = None
    stopped: bool = False


def page_size() -> int:
    # The serving side (and the fleet package it uses) is imported when a replica syncs, not
    # whenever the registry is read (every CLI start reads the `--upstream` choices).
    from patchflow.catalog import replication as upstream_side

    value = config.setting("replication", "page_size", upstream_side.DEFAULT_PAGE)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= \
            upstream_side.MAX_PAGE:
        raise config.ConfigError(
            f"[replication] page_size must be an integer from 1 to {upstream_side.MAX_PAGE}")
    return value


def plan(revision: int, limit: int) -> dict[str, int]:
    """What to ask the upstream for next: the changes after the revision last applied."""
    return {"since": revision, "limit": limit}


class ReplicaConnector(ConnectorBase):
    kind = "replica"
    label = "replication"
    task_name = "replicate"
    choices = (Choice("server", "Another patch server here", "server:NAME", prefix=SERVER_PREFIX,
                      param=Param("upstream_server_name",
                                  "choose the patch server to sync from")),
               Choice("remote", "Another patchflow server", "https://host:port",
                      prefix=REMOTE_PREFIX, hint="another patchflow instance",
                      settings=("upstream_server", "upstream_token", "upstream_fingerprint"),
                      env=(("upstream_token", "PATCHFLOW_UPSTREAM_TOKEN"),),
                      param=Param("upstream_url",
                                  "give the other patchflow server's https://host:port",
                                  error_field="upstream_url", whole=True)))
    brings_third_party = True

    def validate(self, upstream: str, session: Session, own_name: str) -> str:
        from patchflow.catalog.servers import validate_url

        if upstream.startswith(SERVER_PREFIX):
            other = upstream.split(":", 1)[1]
            if other == own_name:
                raise UserError("a patch server cannot be its own upstream")
            if not other or session.scalar(select(PatchServer).filter_by(name=other)) is None:
                raise UserError(f"upstream patch server {other!r} does not exist")
            return upstream
        return validate_url(upstream, "upstream", ("https",))

    def apply(self, server: PatchServer, opts: Any) -> None:
        """The remote upstream's patch server, replication token (stored encrypted) and
        pinned certificate fingerprint: given only with, and required by, https://."""
        from patchflow.catalog.servers import normalize_fingerprint, validate_name

        if opts.upstream_server is not None:
            server.upstream_server = validate_name(opts.upstream_server) \
                if opts.upstream_server else None
        if opts.upstream_token is not None:
            token = opts.upstream_token.strip()
            server.upstream_token_enc = crypto.encrypt(token) if token else None
        if opts.upstream_fingerprint is not None:
            server.upstream_fingerprint = (normalize_fingerprint(opts.upstream_fingerprint)
                                           if opts.upstream_fingerprint.strip() else None)
        remote = (server.upstream or "").startswith(REMOTE_PREFIX)
        given = opts.upstream_server or opts.upstream_token or opts.upstream_fingerprint
        if given and not remote:
            raise UserError("--upstream-token, --upstream-fingerprint and --upstream-server "
                            "apply to --upstream https://host:port (another patchflow instance)")
        if remote and not (server.upstream_token_enc and server.upstream_fingerprint):
            raise UserError(
                "--upstream https://... needs --upstream-token (from `patchflow server token "
                "create` on the upstream) and --upstream-fingerprint (from `patchflow tls "
                "fingerprint` there)"
            )

    def origin(self, server: PatchServer) -> tuple[str | None, str | None]:
        """Revisions are the upstream patch server's: another upstream (or another of its
        patch servers) numbers them differently."""
        return server.upstream, server.upstream_server

    def reset(self, server: PatchServer) -> None:
        server.replication_revision = 0

    def content_upstream(self, server: PatchServer) -> Upstream | None:
        """Another instance serves this server's content too (a local patch server shares
        this instance's content store already)."""
        if not (server.upstream or "").startswith(REMOTE_PREFIX) or not server.upstream_token_enc:
            return None
        return Upstream.of(server)

    def syncs_from(self, server: PatchServer, other: str) -> bool:
        return server.upstream == f"{SERVER_PREFIX}{other}"

    def sync_batch(self, server_id: int, refs: list[dict[str, Any]] | None, done_before: int,
                   total: int, log: Log) -> dict[str, Any]:
        with session_scope() as session:
            server = syncing.server_row(session, server_id)
            result = ReplicaResult(revision=server.replication_revision)
            local = server.upstream.split(":", 1)[1] \
                if server.upstream.startswith(SERVER_PREFIX) else None
            try:
                remote = None if local else Upstream.of(server)
                limit = page_size()
            except (SourceError, SecretError, config.ConfigError) as exc:
                result.error = str(exc)
                return asdict(result)
        try:
            if remote is not None:
                _pull(server_id, remote, limit, result)
            else:
                _pull_local(server_id, local or "", limit, result)
        except syncing.SyncStopped:
            result.stopped = True
        except SourceError as exc:
            result.error = str(exc)
            log.warning("replication stopped at revision %d: %s", result.revision, exc)
        log.info("replication: %d pages, %d patches, at revision %d", result.pages,
                 result.patches, result.revision)
        return asdict(result)

    def summarise(self, results: list[dict[str, Any]]) -> tuple[str, str]:
        outcome = results[0]
        at = f"at revision {outcome['revision']}"
        if outcome["latest"] is not None:
            at += f" of {outcome['latest']}"
        text = f"{outcome['pages']} pages applied ({outcome['patches']} patches), {at}"
        if outcome["stopped"]:
            return SyncStatus.STOPPED, "stopped by request; " + text
        if outcome["error"]:
            return SyncStatus.FAILED, f"{outcome['error']}; {text}"
        return SyncStatus.SUCCESSFUL, text


def _pull(server_id: int, upstream: Upstream, limit: int, result: ReplicaResult) -> None:
    with upstream.session() as http:
        _pull_pages(server_id, upstream, http, limit, result)


def _pull_pages(server_id: int, upstream: Upstream, http: requests.Session, limit: int,
                result: ReplicaResult) -> None:
    where = upstream.url + (f" ({upstream.server})" if upstream.server else "")
    while True:
        syncing.progress(server_id, _where(where, result))
        ask = plan(result.revision, limit)
        page = parse_page(upstream.page(http, ask["since"], ask["limit"]), result.revision)
        with session_scope() as session:
            server = syncing.server_row(session, server_id)
            stored = apply_page(session, server, page, syncing.filters_of(server))
        _advance(result, page.next, page.latest, stored.offered)
        if not page.more:
            return


def _pull_local(server_id: int, name: str, limit: int, result: ReplicaResult) -> None:
    """The same pages as the API serves, read and applied in one transaction each."""
    from patchflow.catalog import replication as upstream_side

    while True:
        syncing.progress(server_id, _where(f"patch server {name}", result))
        ask = plan(result.revision, limit)
        with session_scope() as session:
            server = syncing.server_row(session, server_id)
            source = upstream_side.served_server(session, name)
            raw = upstream_side.encode_page(
                upstream_side.changes_page(session, source, ask["since"], ask["limit"]))
            page = parse_page(raw, result.revision)
            stored = apply_local_page(session, server, page, syncing.filters_of(server))
        _advance(result, page.next, page.latest, stored.offered)
        if not page.more:
            return


def _advance(result: ReplicaResult, revision: int, latest: int, offered: int) -> None:
    if revision > result.revision:
        result.pages += 1
    result.patches += offered
    result.revision = revision
    result.latest = latest


def _where(where: str, result: ReplicaResult) -> str:
    of = f" of {result.latest}" if result.latest is not None else ""
    return f"replicating from {where}: revision {result.revision}{of}"


CONNECTOR = ReplicaConnector()
