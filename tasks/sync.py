"""Sync tasks: thin Prefect wrappers over the sync service (patchflow/catalog/syncing.py) and the
upstream connectors (patchflow/upstreams/).

Each task opens its own database sessions (inside the service) and works on a batch: a
connector's plan, or a batch of its documents (24 MSRC months, all winget packages, a whole
WSUS or wsusscn2 sync, every replication page), each document or page in its own transaction.
The batch task runs under the connector's own task name (sync-msrc-batch, sync-winget-batch,
sync-wsus, sync-wsusscn2, replicate), so the Prefect UI shows which upstream a run was.
"""

from __future__ import annotations

from typing import Any

from prefect import Task, get_run_logger, task

from models.db import session_scope
from patchflow import upstreams
from patchflow.catalog import syncing
from tasks.retry import io_retries


@task(name="begin-sync", **io_retries(
    "Mark the patch server syncing (database)."))
def begin_sync(server_name: str, flow_run_id: str | None) -> dict[str, Any]:
    """{"server_id", "kinds": the connectors that sync it, in order, "error": None or why the
    server's upstream cannot be synced}. The only task that looks the server up by name."""
    server_id = syncing.begin(server_name, flow_run_id)
    with session_scope() as session:
        server = syncing.server_row(session, server_id)
        kinds = upstreams.kinds_for(server)
        error = None if kinds else upstreams.unsupported(server)
    return {"server_id": server_id, "kinds": kinds, "error": error}


@task(name="finish-sync", **io_retries(
    "Record the sync's outcome on the patch server (database)."))
def finish_sync(server_id: int, status: str, message: str) -> None:
    syncing.finish(server_id, status, message)


@task(name="plan-upstream", **io_retries(
    "List the documents an upstream offers that changed (HTTP or a mirror folder)."))
def plan_upstream(server_id: int, kind: str) -> dict[str, Any]:
    """{"refs": what to fetch, oldest first, "error": one line or None}. An unreachable source
    is an outcome, not a crash: it is returned, not raised, so the run log carries one line
    instead of a traceback."""
    plan = upstreams.get(kind).plan_refs(server_id)
    return {"refs": plan.refs, "error": plan.error}


@task(name="sync-upstream-batch", **io_retries(
    "Fetch and store a batch of an upstream's documents (HTTP, database); a document that "
    "fails alone is recorded, not retried; a rerun resumes from what is stored."))
def sync_upstream_batch(server_id: int, kind: str, refs: list[dict[str, Any]] | None,
                        done_before: int, total: int) -> dict[str, Any]:
    return upstreams.get(kind).sync_batch(server_id, refs, done_before, total,
                                          get_run_logger())


def plan_task(kind: str) -> Task[..., dict[str, Any]]:
    """plan_upstream under the connector's name (plan-msrc)."""
    return plan_upstream.with_options(name=f"plan-{kind}")


def batch_task(kind: str) -> Task[..., dict[str, Any]]:
    """sync_upstream_batch under the connector's task name."""
    return sync_upstream_batch.with_options(name=upstreams.get(kind).task_name)


@task(name="prefetch-content", **io_retries(
    "Download the content of every patch offered (HTTP, content store)."))
def prefetch_content(server_id: int) -> dict[str, Any]:
    """`sync --prefetch`: every installer the server offers that is not stored yet."""
    outcome = syncing.prefetch_content(server_id)
    get_run_logger().info("prefetch: %d files fetched, %d failed", outcome["fetched"],
                          outcome["failed"])
    return outcome
