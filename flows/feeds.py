"""The `patchflow-feeds-sync` flow: refresh the vulnerability feeds (KEV, Mozilla, NVD).

One sub-flow per feed, run by its connector (patchflow.upstreams FEEDS: plan, batches,
summary), so a failing feed never stops the others and each records its own status (Running,
then Successful/Failed) for `patchflow feeds list`. A run
that is cancelled or interrupted (Ctrl+C, SIGTERM, its process killed) leaves its feeds
Stopped: the state hooks below, and for a process that died without a word, the start-up
reaper of `patchflow serve` (deployments/orphans.py), as for a patch server's sync.
`feeds sync --stop` cancels a deployment run, or interrupts a CLI run on this machine (its
process is recorded by `record_process`), through patchflow.ops.flowruns.stop_flow_run.

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
from patchflow.catalog import vulnfeeds
from patchflow.upstreams import FEEDS
from patchflow.upstreams.feed import FeedResult, failed
from sources.records import one_line
from tasks import feeds as t


@flow(name="patchflow-feed", flow_run_name="feed-{name}")
def sync_feed(name: str, source: str, last_modified: Any = None) -> FeedResult:
    """One feed through its connector: plan, batches (a source failure stops the rest), then
    the summary, which stores what the feed stores at once."""
    connector = FEEDS[name]
    workdir = t.workdir()
    try:
        plan = t.plan(name, source, last_modified, workdir)
        if plan.error:
            return failed(plan.error)
        batches = []
        for refs in connector.batches(source, plan):
            batches.append(t.sync_batch(name, source, refs))
            if batches[-1].fatal:
                break
        return t.summarise(name, source, plan, batches)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@flow(name="patchflow-feeds-sync", log_prints=True, on_running=[record_process],
      on_cancellation=[hooks.feeds_cancelled], on_crashed=[hooks.feeds_crashed])
def feeds_sync(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Sync the named feeds (default: every feed that has a source); returns one
    {"name", "status", "message"} per feed. Source problems never raise: they are
    the feed's status."""
    logger = get_run_logger()
    wanted = [vulnfeeds.feed_name(n) for n in names] if names else list(vulnfeeds.feed_names())
    outcomes = []
    for name in dict.fromkeys(wanted):
        state = t.begin(name, flow_run.get_id(), only_with_source=not names)
        source = state["source"]
        if state["skipped"]:
            continue
        try:
            if not source:
                result = failed("no source set (feeds set --source)")
            else:
                result = sync_feed(name, source, state["last_modified"])
        except Exception as exc:  # a bug in one feed: its status says so, the others go on
            result = failed(one_line(exc))
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
