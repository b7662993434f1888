"""The flows as deployments run them: the real flow functions from flows/, plus the state hooks
that keep patchflow's status columns right when a run is cancelled or crashes.

Both `patchflow serve` and `prefect deploy` (deployments/prefect.yaml) use these objects, so a
run cancelled from a worker machine ends "Stopped" in patchflow exactly like a served one.
`with_options` keeps each flow's name, parameters and function; only the hooks are added.

The file name is unique on purpose: Prefect loads a `path/file.py:flow` entrypoint by putting
the file's folder first on sys.path and importing the file under its stem, so a file named
`flows.py` here would replace the `flows` package in a worker (and in anything it spawns).
"""

from __future__ import annotations

from typing import Any

from prefect import Flow

from deployments import hooks
from flows.cycle import cycle as _cycle
from flows.feeds import feeds_sync as feeds  # its hooks are on the flow (Ctrl+C too)
from flows.report import report_flow as _report
from flows.scan import scan as _scan
from flows.sync import sync as _sync

sync = _sync.with_options(
    on_cancellation=[hooks.sync_cancelled], on_crashed=[hooks.sync_crashed])
scan = _scan.with_options(
    on_running=[*_scan.on_running_hooks, hooks.scheduled_scan_running],
    on_cancellation=[hooks.scan_cancelled], on_crashed=[hooks.scan_crashed])
cycle = _cycle.with_options(
    on_running=[*_cycle.on_running_hooks, hooks.scheduled_cycle_running],
    on_cancellation=[hooks.cycle_cancelled], on_crashed=[hooks.cycle_crashed])
report = _report

FLOWS: dict[str, Flow[Any, Any]] = {"sync": sync, "scan": scan, "cycle": cycle,
                                     "report": report, "feeds": feeds}
