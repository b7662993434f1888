"""Answering a cycle run that waits at a manual gate: `patchflow cycle resume RUN [--reject]`
and the console's Resume / Reject buttons.

The waiting flow is paused with input (flows/cycle.py `_manual_gate`); the answer is that input,
sent through the Prefect API like the Resume form of the Prefect UI. The flow itself records the
gate step's outcome; the answer's audit line is written here, only once Prefect took it.
"""

from __future__ import annotations

import time
from uuid import UUID

from models.db import session_scope
from patchflow.cycle import runs
from patchflow.errors import UserError
from patchflow.ops import audit

# How long an answer waits for a run marked Paused to be paused by Prefect too.
SETTLE_S = 15.0


def answer(run_id: int | str, approve: bool, reason: str, who: str, source: str = "cli",
           url: str | None = None) -> int:
    """Resume (approve) or reject the paused run `run_id`; returns the run's number. No
    transaction is held while Prefect resumes the flow, which writes the same run's record."""
    from prefect.exceptions import FlowPauseTimeout, NotPausedError, ObjectNotFound
    from prefect.flow_runs import resume_flow_run

    with session_scope(url) as session:
        record = runs.get_run(session, run_id)
        number, state, flow_run_id = record.id, record.state, record.flow_run_id
    if state != runs.PAUSED or not flow_run_id:
        raise UserError(f"cycle run {number} is not waiting at a gate (it is "
                        f"{state.lower()})")
    reason = (reason or "").strip()[:500]
    # The run is marked Paused a moment before Prefect pauses it: an answer in that moment
    # waits for the pause rather than calling a live run dead.
    deadline = time.monotonic() + SETTLE_S
    while True:
        try:
            resume_flow_run(UUID(flow_run_id), run_input={
                "approve": approve, "reason": reason, "by": who})
            break
        except (NotPausedError, ObjectNotFound) as exc:
            if isinstance(exc, ObjectNotFound) or time.monotonic() >= deadline:
                raise UserError(f"cycle run {number} is marked paused but its Prefect flow run "
                                "is not (its process may have died): `patchflow cycle show "
                                f"{number}`") from None
            time.sleep(0.5)
        except FlowPauseTimeout:
            raise UserError(f"cycle run {number}: its gate timed out; the cycle halts") \
                from None
    with session_scope(url) as session:
        audit.record(session, who, "cycle.resume" if approve else "cycle.reject", str(number),
                     reason or None, source=source)
    return number
