"""Sync tasks for a patch server whose upstream is another patchflow patch server: on another
instance (`--upstream https://host:port`, over the replication API) or on this one
(`--upstream server:NAME`).

Pages are fetched in revision order from the revision last applied; each page is checked whole,
then applied in one transaction together with the new revision, and the stop flag is checked
between pages. So a sync that is killed, stopped or refused halfway (a revoked token, a page cut
off) leaves every page before it applied and nothing of the failing one, and the next sync
continues from there. Content is fetched on demand, or ahead with `--prefetch`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import requests
from prefect import get_run_logger, task

from models.db import session_scope
from patchflow import config
from patchflow import replication as upstream_side
from patchflow.content_source import missing_content, prefetch
from patchflow.crypto import SecretError
from patchflow.replica_store import apply_local_page, apply_page
from patchflow.upstream_client import Upstream
from sources.records import SourceError
from sources.replica import parse_page
from tasks.retry import io_retries
from tasks.sync import SyncStopped, _filters, _progress, _server


@dataclass
class ReplicaResult:
    pages: int = 0
    patches: int = 0
    revision: int = 0
    latest: int | None = None
    error: str | None = None
    stopped: bool = False


def page_size() -> int:
    value = config.setting("replication", "page_size", upstream_side.DEFAULT_PAGE)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= \
            upstream_side.MAX_PAGE:
        raise config.ConfigError(
            f"[replication] page_size must be an integer from 1 to {upstream_side.MAX_PAGE}")
    return value


@task(name="replicate", **io_retries(
    "Apply the upstream patchflow server's catalog pages (HTTPS, database); resumes at "
    "the stored revision."))
def replicate(server_id: int) -> dict[str, Any]:
    logger = get_run_logger()
    with session_scope() as session:
        server = _server(session, server_id)
        result = ReplicaResult(revision=server.replication_revision)
        local = server.upstream.split(":", 1)[1] if server.upstream.startswith("server:") \
            else None
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
    except SyncStopped:
        result.stopped = True
    except SourceError as exc:
        result.error = str(exc)
        logger.warning("replication stopped at revision %d: %s", result.revision, exc)
    logger.info("replication: %d pages, %d patches, at revision %d", result.pages,
                result.patches, result.revision)
    return asdict(result)


def _pull(server_id: int, upstream: Upstream, limit: int, result: ReplicaResult) -> None:
    with upstream.session() as http:
        _pull_pages(server_id, upstream, http, limit, result)


def _pull_pages(server_id: int, upstream: Upstream, http: requests.Session, limit: int,
                result: ReplicaResult) -> None:
    where = upstream.url + (f" ({upstream.server})" if upstream.server else "")
    while True:
        _progress(server_id, _where(where, result))
        page = parse_page(upstream.page(http, result.revision, limit), result.revision)
        with session_scope() as session:
            server = _server(session, server_id)
            stored = apply_page(session, server, page, _filters(server))
        _advance(result, page.next, page.latest, stored.offered)
        if not page.more:
            return


def _pull_local(server_id: int, name: str, limit: int, result: ReplicaResult) -> None:
    """The same pages as the API serves, read and applied in one transaction each."""
    while True:
        _progress(server_id, _where(f"patch server {name}", result))
        with session_scope() as session:
            server = _server(session, server_id)
            source = upstream_side.served_server(session, name)
            raw = upstream_side.encode_page(
                upstream_side.changes_page(session, source, result.revision, limit))
            page = parse_page(raw, result.revision)
            stored = apply_local_page(session, server, page, _filters(server))
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


@task(name="prefetch-content", **io_retries(
    "Download the content of every patch offered (HTTP, content store)."))
def prefetch_content(server_id: int) -> dict[str, Any]:
    """Download every installer the server offers that is not stored yet."""
    logger = get_run_logger()
    shas = missing_content(server_id)
    stopped = False
    fetched, errors = 0, []
    for start in range(0, len(shas), 20):
        try:
            _progress(server_id, f"prefetching content {start + 1}/{len(shas)}")
        except SyncStopped:
            stopped = True
            break
        done, failed = prefetch(server_id, shas[start : start + 20])
        fetched += done
        errors.extend(failed)
    logger.info("prefetch: %d files fetched, %d failed", fetched, len(errors))
    return {"fetched": fetched, "failed": len(errors), "errors": errors[:5], "stopped": stopped}
