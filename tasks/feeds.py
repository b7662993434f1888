"""Vulnerability feed tasks: thin Prefect tasks over the feed connectors (patchflow.upstreams,
FEEDS) and the feed storage (patchflow.catalog.vulnfeeds).

Every task opens its own database session. A feed is read in batches, one task run each; a
document that fails (unreadable, truncated, hostile) is counted with a one-line reason and the
batch goes on, and what it stored last time stays.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from typing import Any

from prefect import get_run_logger, task

from models.db import session_scope
from patchflow.catalog import vulnfeeds
from patchflow.upstreams import FEEDS
from patchflow.upstreams.base import Plan
from patchflow.upstreams.feed import FeedBatch, FeedResult
from tasks.retry import io_retries


@task(name="feed-begin", **io_retries(
    "Mark the feed Running (database)."))
def begin(name: str, flow_run_id: str | None, only_with_source: bool = False) -> dict[str, Any]:
    """Mark the feed Running; a feed turned off is left alone when `only_with_source`."""
    with session_scope() as session:
        if only_with_source and not vulnfeeds.get_feed(session, name).source:
            return {"source": None, "last_modified": None, "skipped": True}
        row = vulnfeeds.begin(session, name, flow_run_id)
        return {"source": row.source, "last_modified": row.last_modified, "skipped": False}


@task(name="feeds-stale", **io_retries(
    "Which feeds are due before a cycle's scan (database)."))
def stale_feeds() -> dict[str, Any]:
    """{"names": feeds due before a cycle's scan, "reason": one line} (vulnfeeds.stale)."""
    from patchflow import config

    hours = float(config.number("feeds", "max_age_hours", 24, 1, 24 * 366))
    with session_scope() as session:
        names = vulnfeeds.stale(session, dt.timedelta(hours=hours))
    if names:
        return {"names": names, "reason": f"feeds {', '.join(names)}: no successful sync "
                                          f"within {hours:g} h"}
    return {"names": [], "reason": f"feeds in use synced within {hours:g} h"}


@task(name="feed-plan", **io_retries(
    "List what to read from the feed's source (HTTP, folder or file, database)."))
def plan(name: str, source: str, last_modified: dt.datetime | None, workdir: str) -> Plan:
    """Source problems are returned in the plan, not raised, so the run log has one line."""
    return FEEDS[name].plan(source, last_modified, workdir)


@task(name="feed-batch", task_run_name="feed-{name}-batch", **io_retries(
    "Read, parse and store a batch of the feed's documents (HTTP or files, database)."))
def sync_batch(name: str, source: str, refs: list[dict[str, Any]]) -> FeedBatch:
    return FEEDS[name].sync_batch(source, refs, get_run_logger())


@task(name="feed-summary", **io_retries(
    "Store what the feed stores at once, and its outcome line (database)."))
def summarise(name: str, source: str, plan: Plan, batches: list[FeedBatch]) -> FeedResult:
    return FEEDS[name].summarise(source, plan, batches)


@task(name="feed-finish", **io_retries(
    "Record the feed's outcome (database)."))
def finish(name: str, result: FeedResult) -> None:
    with session_scope() as session:
        vulnfeeds.finish(session, name, result.status, result.message, result.records,
                         result.last_modified)


@task(name="feed-link-patches", **io_retries(
    "Link third-party patches to the CVEs they fix (database)."))
def link_patches() -> int:
    """Third-party patches and the CVEs each fixes, after the feeds changed."""
    from patchflow.catalog.vuln_query import relink_patches

    with session_scope() as session:
        return relink_patches(session)


def workdir() -> str:
    return tempfile.mkdtemp(prefix="patchflow-feeds-")
