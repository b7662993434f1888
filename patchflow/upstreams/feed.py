"""The protocol of the vulnerability feed connectors (KEV, Mozilla, NVD), and what they share.

A feed is an upstream of the whole instance rather than of one patch server, so its connector
has no server settings: it has a default online source, a pure `plan` of what to read from a
source (URL, folder or file), batches that fetch, parse and store, and a summary. The flow
(flows/feeds.py) runs every feed the same way through the registry in patchflow.upstreams:
plan, batches, summary; nothing outside a connector asks which feed it is.

Feeds reach the Internet through the proxy of a patch server: `[feeds] proxy_server` in
patchflow.toml names it, by default the `local` server `patchflow init` creates, so a site that
set its proxy once in the wizard has its feeds go the same way.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import requests

from models.enums import SyncStatus
from patchflow.http import describe_error, make_session
from patchflow.upstreams.base import Log, Plan
from sources.records import SourceError

__all__ = ["FeedBase", "FeedBatch", "FeedConnector", "FeedResult", "Log", "Plan", "download",
           "failed", "feed_http", "is_url", "outcome", "proxy_server_name", "read"]

DEFAULT_PROXY_SERVER = "local"


@dataclass
class FeedResult:
    """A feed's outcome, recorded in its status row."""

    status: str = SyncStatus.SUCCESSFUL
    message: str = ""
    records: int | None = None  # rows the feed now has stored; None keeps the last count
    errors: list[str] = field(default_factory=list)
    last_modified: dt.datetime | None = None  # NVD's high-water mark, set on success only


@dataclass
class FeedBatch:
    """What one batch task gives back to the flow."""

    read: int = 0  # documents read and parsed
    errors: list[str] = field(default_factory=list)  # one line per document that failed
    docs: dict[str, Any] = field(default_factory=dict)  # kept for the summary to store
    records: int | None = None  # rows stored after this batch, when it stores itself
    fatal: str | None = None  # the source failed: later batches are not run
    detail: str = ""  # a line the summary adds (a catalog version, a query kind)


class FeedConnector(Protocol):
    kind: str  # the feed's name (`feeds set kev|mozilla|nvd`) and its storage source
    label: str
    default_source: str  # the official online source a new feed starts with
    batch_size: int  # references per batch task run

    def plan(self, source: str, last_modified: dt.datetime | None, workdir: str) -> Plan:
        """What to read from `source` (refs travel between Prefect tasks), or why not."""

    def sync_batch(self, source: str, refs: list[dict[str, Any]], log: Log) -> FeedBatch:
        """Fetch and parse `refs`; store them unless the summary stores the whole feed."""

    def batches(self, source: str, plan: Plan) -> list[list[dict[str, Any]]]:
        """The plan's refs cut into the batches of one task run each."""

    def summarise(self, source: str, plan: Plan, batches: list[FeedBatch]) -> FeedResult:
        """Store what is stored once for the whole feed, and say how it went."""


class FeedBase:
    """The default batching: `batch_size` refs per task run."""

    batch_size = 50

    def batches(self, source: str, plan: Plan) -> list[list[dict[str, Any]]]:
        size = self.batch_size
        return [plan.refs[i:i + size] for i in range(0, len(plan.refs), size)]


def is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def proxy_server_name() -> str | None:
    """The patch server whose proxy the feeds use (`[feeds] proxy_server`, "none" for none)."""
    from patchflow import config

    name = str(config.setting("feeds", "proxy_server", DEFAULT_PROXY_SERVER) or "").strip()
    return None if name.lower() in ("", "none") else name


def feed_http(retries: int = 4) -> requests.Session:
    """An HTTP session through the feeds' proxy (none when that patch server has none or does
    not exist: a site without a proxy needs no setting)."""
    from sqlalchemy import select

    from models import PatchServer
    from models.db import session_scope
    from patchflow.catalog.servers import proxies_of

    proxies = None
    name = proxy_server_name()
    if name:
        with session_scope() as session:
            server = session.scalar(select(PatchServer).where(PatchServer.name == name))
            proxies = proxies_of(server) if server is not None else None
    return make_session(proxies=proxies, retries=retries)


def download(http: requests.Session, url: str, timeout: float = 120.0) -> bytes:
    try:
        response = http.get(url, timeout=(10, timeout))
        response.raise_for_status()
    except requests.RequestException as exc:
        raise SourceError(f"{url}: {describe_error(exc)}") from None
    return response.content


def read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None


def outcome(text: str, records: int | None, errors: list[str]) -> FeedResult:
    """Some documents failed: the feed is Failed (an administrator must look), but what the
    others gave is stored and what the failed ones gave last time is kept."""
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return FeedResult(status=SyncStatus.FAILED, records=records, errors=errors,
                          message=f"{len(errors)} documents failed: {errors[0]}{more}; {text}")
    return FeedResult(message=text, records=records)


def failed(message: str) -> FeedResult:
    return FeedResult(status=SyncStatus.FAILED, message=message)
