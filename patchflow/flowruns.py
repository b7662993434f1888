"""Talking to a Prefect API about flow runs started elsewhere (deployments): shared by the
CLI's `sync --stop`/`scan --stop` and the console's Stop buttons, so neither entry point
imports the other."""

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
