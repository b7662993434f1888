"""Talking to a Prefect API about flow runs started elsewhere (deployments)."""

from __future__ import annotations


def cancel_flow_run(flow_run_id: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(
            flow_run_id, State(type=StateType.CANCELLING, name="Cancelling"), force=True
        )
