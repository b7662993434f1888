"""Where a flow's batches run: one after another in the flow-run process (the default), or
spread over a Dask cluster for scale-out.

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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from patchflow import config
from patchflow.errors import UserError

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


def distributed(setting: str | None) -> bool:
    return resolve(setting) != DEFAULT


@contextmanager
def dask_runner(setting: str | None) -> Iterator[Any]:
    """A started DaskTaskRunner: at the given address, at `[prefect] dask_address`, or on a
    local cluster of `[prefect] dask_workers` processes that lives as long as the block."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise UserError("the dask task runner needs prefect-dask: pip install "
                        "'patchflow[dask]'") from None
    resolved = resolve(setting)
    address = (config.setting("prefect", "dask_address") if resolved in (DASK, DEFAULT)
               else resolved)
    if address:
        runner = DaskTaskRunner(address=str(address))
    else:
        workers = int(config.setting("prefect", "dask_workers", 2))
        runner = DaskTaskRunner(cluster_kwargs={"n_workers": max(1, workers),
                                                "threads_per_worker": 1, "processes": True})
    with runner:
        yield runner


def run_batches(setting: str | None, task: Any, parameters: Sequence[dict[str, Any]]) -> list[Any]:
    """Submit one task run per batch to Dask, all at once, and return their results in order.
    Must be called inside a flow run (the task runs are recorded under it)."""
    with dask_runner(setting) as runner:
        futures = [runner.submit(task, parameters=dict(p)) for p in parameters]
        return [future.result() for future in futures]
