"""The `patchflow-feeds-sync` flow: refresh the vulnerability feeds (KEV, Mozilla, NVD).

One sub-flow per feed, each a sequence of tasks, so a failing feed never stops the others and
each records its own status (Running, then Successful/Failed) for `patchflow feeds list`. A run
that is cancelled or interrupted (Ctrl+C, SIGTERM, its process killed) leaves its feeds
Stopped: the state hooks below, and for a process that died without a word, the start-up
reaper of `patchflow serve` (deployments/orphans.py), as for a patch server's sync.
`feeds sync --stop` cancels a deployment run, or interrupts a CLI run on this machine (its
process is recorded by `record_process`), through patchflow.flowruns.stop_flow_run.

The flow runs from the CLI (`feeds sync`), daily from the `patchflow-feeds-sync/feeds@…`
deployment (deployments/build.py), and from a patch cycle before its scan when the feeds are
older than a day (`sync_stale_feeds`).
"""

from __future__ import annotations

import shutil
from typing import Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from deployments import hooks
from deployments.orphans import record_process
from models.enums import SyncStatus
from patchflow import vulnfeeds
from sources.records import one_line
from tasks import feeds as t


@flow(name="patchflow-feed-kev")
def sync_kev_feed(source: str) -> t.FeedResult:
    return t.sync_kev(source)


@flow(name="patchflow-feed-mozilla")
def sync_mozilla_feed(source: str) -> t.FeedResult:
    workdir = t.workdir()
    try:
        locations, error = t.plan_mozilla(source, workdir)
        if error:
            return t.FeedResult(status=SyncStatus.FAILED, message=error)
        docs: dict[str, Any] = {}
        errors: list[str] = []
        for start in range(0, len(locations), t.BATCH):
            parsed, failed = t.parse_mozilla_batch(locations[start:start + t.BATCH])
            docs.update(parsed)
            errors.extend(failed)
        if not docs and errors:
            return t.FeedResult(status=SyncStatus.FAILED,
                                message=f"no advisory could be read ({errors[0]})")
        records = t.store_mozilla(docs, len(errors))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _outcome(f"{len(docs)} advisories, {records} CVEs", records, errors)


@flow(name="patchflow-feed-nvd")
def sync_nvd_feed(source: str, last_modified: Any = None) -> t.FeedResult:
    if t.is_url(source):
        return t.sync_nvd_online(source, last_modified)
    locations = t.plan_nvd_files(source)
    read, stored, errors = 0, None, []
    for start in range(0, len(locations), t.BATCH):
        batch = t.sync_nvd_files(locations[start:start + t.BATCH])
        read += len(locations[start:start + t.BATCH]) - batch.failed
        stored = batch.records
        errors.extend(batch.errors)
    if not read and errors:
        return t.FeedResult(status=SyncStatus.FAILED,
                            message=f"no record could be read ({errors[0]})")
    return _outcome(f"{read} CVE record files read", stored, errors)


def _outcome(text: str, records: int | None, errors: list[str]) -> t.FeedResult:
    """Some documents failed: the feed is Failed (an administrator must look), but what the
    others gave is stored and what the failed ones gave last time is kept."""
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        return t.FeedResult(status=SyncStatus.FAILED, records=records, errors=errors,
                            message=f"{len(errors)} documents failed: {errors[0]}{more}; {text}")
    return t.FeedResult(message=text, records=records)


_SUBFLOWS = {"kev": sync_kev_feed, "mozilla": sync_mozilla_feed, "nvd": sync_nvd_feed}


@flow(name="patchflow-feeds-sync", log_prints=True, on_running=[record_process],
      on_cancellation=[hooks.feeds_cancelled], on_crashed=[hooks.feeds_crashed])
def feeds_sync(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Sync the named feeds (default: every feed that has a source); returns one
    {"name", "status", "message"} per feed. Source problems never raise: they are
    the feed's status."""
    logger = get_run_logger()
    wanted = [vulnfeeds.feed_name(n) for n in names] if names else list(vulnfeeds.FEEDS)
    outcomes = []
    for name in dict.fromkeys(wanted):
        state = t.begin(name, flow_run.get_id(), only_with_source=not names)
        source = state["source"]
        if state["skipped"]:
            continue
        try:
            if not source:
                result = t.FeedResult(status=SyncStatus.FAILED,
                                      message="no source set (feeds set --source)")
            elif name == "nvd":
                result = sync_nvd_feed(source, state["last_modified"])
            else:
                result = _SUBFLOWS[name](source)
        except Exception as exc:  # a bug in one feed: its status says so, the others go on
            result = t.FeedResult(status=SyncStatus.FAILED, message=one_line(exc))
        t.finish(name, result)
        logger.info("feed %s: %s: %s", name, result.status, result.message)
        outcomes.append({"name": name, "status": result.status, "message": result.message})
    if outcomes:
        logger.info("%d (patch, CVE) links", t.link_patches())
    return outcomes


def sync_stale_feeds() -> dict[str, Any]:
    """Before a patch cycle's scan: sync the feeds in use whose last sync is not a success
    within `[feeds] max_age_hours` (default 24), so the scan rates pairs with current
    exploited/KEV facts. Returns {"synced": outcomes, "reason": one line}; never raises for a
    feed's failure (the cycle goes on with the facts held)."""
    stale = t.stale_feeds()
    if not stale["names"]:
        return {"synced": [], "reason": stale["reason"]}
    outcomes = feeds_sync(stale["names"])
    said = ", ".join(f"{o['name']} {o['status']}" for o in outcomes)
    return {"synced": outcomes, "reason": f"{stale['reason']}: synced: {said}"}
