"""Where a flow's batches run: in the flow-run process (the default; one at a time on SQLite,
two at once on MariaDB: `patchflow.scanning.service.batches_at_once`), or spread over a Dask
cluster for scale-out.

The choice is a flow parameter (`task_runner`) so that it shows in the Prefect UI next to the
run and can differ per deployment; when it is not given, `[prefect] task_runner` in
patchflow.toml decides:

    [prefect]
    task_runner = "dask"                      # "default" (in process) or "dask"
    dask_address = "tcp://scheduler:8786"     # an existing cluster; omit for a local one
    dask_workers = 2                          # size of the local cluster (processes)

A parameter value may also be a scheduler address (`tcp://host:8786`). Dask needs the
`prefect-dask` package (`pip install 'patchflow[dask]'`); its workers need the same
PATCHFLOW_HOME / PATCHFLOW_DATABASE_URL as the server, because every batch task opens its own
database session (nothing but ids and the catalog travels with a task).

The scan flow's task runner is `ConfiguredTaskRunner`: the flow maps its batch task over the
batches with Prefect's own API (`scan_batch.map(...)`), and the runner chosen for the run
executes them; every batch checks the scan's stop request before it starts, so a stop is
honoured between batches on every runner (the batches already running finish).
"""

from __future__ import annotations

from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from patchflow import config
from patchflow.errors import UserError
from patchflow.scanning.service import batches_at_once

DEFAULT = "default"
DASK = "dask"
_ADDRESS_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


def resolve(setting: str | None) -> str:
    """The effective setting: `default`, `dask`, or a Dask scheduler address."""
    value = (setting if setting is not None else
             str(config.setting("prefect", "task_runner", DEFAULT) or DEFAULT)).strip()
    if value.lower() in (DEFAULT, "", "thread", "threads", "local"):
        return DEFAULT
    if value.lower() == DASK or value.startswith(_ADDRESS_SCHEMES):
        return value if value.startswith(_ADDRESS_SCHEMES) else DASK
    raise UserError(f"unknown task runner {value!r}: use default, dask or a Dask scheduler "
                    "address such as tcp://host:8786")


def build(setting: str | None) -> Any:
    """The task runner for `setting` (not started): for the default, threads of the flow-run
    process, as many as `batches_at_once` (one on SQLite, two on MariaDB), taking batches in
    submission order, each checking for a stop request before it starts; Dask at the given or
    configured address, or on a local cluster of `[prefect] dask_workers`."""
    resolved = resolve(setting)
    if resolved == DEFAULT:
        return ThreadPoolTaskRunner(max_workers=batches_at_once())
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise UserError("the dask task runner needs prefect-dask: pip install "
                        "'patchflow[dask]'") from None
    address = config.setting("prefect", "dask_address") if resolved == DASK else resolved
    if address:
        return DaskTaskRunner(address=str(address))
    workers = int(config.setting("prefect", "dask_workers", 2))
    return DaskTaskRunner(cluster_kwargs={"n_workers": max(1, workers), "threads_per_worker": 1,
                                          "processes": True})


class ConfiguredTaskRunner(TaskRunner):
    """A flow's task runner chosen per run: the run's `task_runner` parameter, else
    `[prefect] task_runner`. Prefect enters a flow's task runner before the run's parameters
    are in context, so the real runner (`build`) is made and started at the first submit, and
    stopped with the flow. `task.map(...)`/`task.submit(...)` in the flow go through it."""

    def __init__(self) -> None:
        super().__init__()
        self._delegate: Any = None

    def duplicate(self) -> ConfiguredTaskRunner:
        return type(self)()

    def _runner(self) -> Any:
        if self._delegate is None:
            from prefect.context import FlowRunContext

            context = FlowRunContext.get()
            setting = (context.parameters or {}).get("task_runner") if context else None
            runner = build(setting)
            self._delegate = runner.__enter__()
        return self._delegate

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None,
               dependencies: Any = None) -> Any:
        return self._runner().submit(task, parameters, wait_for, dependencies)

    def map(self, task: Any, parameters: dict[str, Any], wait_for: Any = None) -> Any:
        return self._runner().map(task, parameters, wait_for)

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        delegate, self._delegate = self._delegate, None
        try:
            if delegate is not None:
                delegate.__exit__(exc_type, exc_value, traceback)
        finally:
            super().__exit__(exc_type, exc_value, traceback)
