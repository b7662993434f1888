"""Talking to a Prefect API about flow runs started elsewhere (deployments, other CLI
processes): shared by the CLI's `sync --stop`/`scan --stop`/`feeds sync --stop` and the
console's Stop buttons, so neither entry point imports the other."""

from __future__ import annotations


def cancel_flow_run(flow_run_id: str) -> None:
    """Cancel a deployment run (its runner or worker kills the process, the hooks mark it
    Stopped). A run a CLI process runs in-process has no deployment: nothing would kill it,
    and it sees the stop flag in the database between documents or batches, so it is left
    alone (a forced Cancelling state on it would only confuse its end state)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound
    from prefect.states import State

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(str(flow_run_id)))
        except (ObjectNotFound, ValueError):
            return
        if run.deployment_id is None or (run.state is not None and run.state.is_final()):
            return
        client.set_flow_run_state(
            run.id, State(type=StateType.CANCELLING, name="Cancelling"), force=True
        )


def stop_flow_run(flow_run_id: str) -> str:
    """Stop a flow run whichever way it runs, for flows without a stop flag of their own (the
    vulnerability feeds): a deployment run is cancelled (cancel_flow_run); a run a CLI process
    runs in-process on this machine gets SIGINT, as Ctrl+C in its terminal would, and its
    on_crashed hook records the end. Returns "cancelled", "interrupted", "ended" (the run is
    over, or its process on this machine is gone: whatever it left Running is stale) or
    "unknown" (not on this Prefect server, or its process is on another machine)."""
    import os
    import signal
    import socket
    import sys
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from patchflow.ops import childproc

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(str(flow_run_id)))
        except (ObjectNotFound, ValueError):
            return "unknown"
    if run.state is not None and run.state.is_final():
        return "ended"
    if run.deployment_id is not None:
        cancel_flow_run(flow_run_id)
        return "cancelled"
    host, _, pid = (run.infrastructure_pid or "").rpartition(":")
    if not pid.isdigit() or host != socket.gethostname() or sys.platform == "win32":
        return "unknown"
    if not childproc.alive(int(pid)):
        return "ended"
    os.kill(int(pid), signal.SIGINT)
    return "interrupted"
