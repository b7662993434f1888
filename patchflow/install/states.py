"""The install item state machine and the meaning of installer exit codes (pure, no I/O).

An item moves pending → dispatched → downloading → installing → succeeded | failed | reboot
pending, or to cancelled. The rules live here once so the agent API, the flow's timeout sweep
and `jobs cancel` agree on what may follow what; the service modules only add the database.
"""

from __future__ import annotations

from models.enums import FINAL_ITEM_STATES, ItemState

PENDING = ItemState.PENDING.value
DISPATCHED = ItemState.DISPATCHED.value
DOWNLOADING = ItemState.DOWNLOADING.value
INSTALLING = ItemState.INSTALLING.value
SUCCEEDED = ItemState.SUCCEEDED.value
FAILED = ItemState.FAILED.value
REBOOT_PENDING = ItemState.REBOOT_PENDING.value
CANCELLED = ItemState.CANCELLED.value

FINAL: frozenset[str] = frozenset(s.value for s in FINAL_ITEM_STATES)
# Handed to an agent and not finished: what the per-item timeout watches.
IN_FLIGHT: tuple[str, ...] = (DISPATCHED, DOWNLOADING, INSTALLING)
OPEN: tuple[str, ...] = (PENDING, *IN_FLIGHT)
PROGRESS: tuple[str, ...] = (DOWNLOADING, INSTALLING)
AGENT_FINAL: tuple[str, ...] = (SUCCEEDED, FAILED, REBOOT_PENDING)

# Progress only moves forward: a late or repeated "downloading" never undoes "installing".
PROGRESS_FROM: dict[str, tuple[str, ...]] = {
    DOWNLOADING: (DISPATCHED,),
    INSTALLING: (DISPATCHED, DOWNLOADING),
}

NO_RESULT = "no result from agent"
"""The message of an item whose agent never reported: `may_override` recognises a timeout by
this prefix, and the README quotes it."""

JOB_PENDING, JOB_RUNNING, JOB_DONE, JOB_CANCELLED = "pending", "running", "done", "cancelled"
JOB_FINAL = frozenset({JOB_DONE, JOB_CANCELLED})

REBOOT_CODES = frozenset({3010, 1641})
RETRYABLE_CODES = frozenset({1602, 1618})
EXIT_MEANINGS: dict[int, str] = {
    0: "success",
    1602: "the user cancelled the installation",
    1603: "fatal error during installation",
    1618: "another installation is already in progress",
    1619: "the installation package could not be opened",
    1633: "this installation package is not supported on this platform",
    1638: "another version of this product is already installed",
    1641: "the installer started a restart",
    3010: "a restart is required to complete the installation",
}


def outcome_of(exit_code: int) -> str:
    """The item state an installer exit code stands for (before the restart decision)."""
    if exit_code == 0:
        return SUCCEEDED
    if exit_code in REBOOT_CODES:
        return REBOOT_PENDING
    return FAILED


def is_retryable(exit_code: int | None) -> bool:
    """1602 (cancelled) and 1618 (another install running) usually pass on a second try."""
    return exit_code is not None and exit_code in RETRYABLE_CODES


def describe_exit(exit_code: int | None) -> str:
    """'exit code 1603 (fatal error during installation)' for messages and the job view."""
    if exit_code is None:
        return "no exit code"
    meaning = EXIT_MEANINGS.get(exit_code)
    return f"exit code {exit_code} ({meaning})" if meaning else f"exit code {exit_code}"


def may_override(state: str, message: str | None) -> bool:
    """Whether an agent's final result may replace a final state the server set on its own.

    The server decides "no result from agent" and "cancelled" without knowing what the machine
    did; when the agent's result arrives after all, it is the truth and wins. A result never
    replaces another result.
    """
    if state == CANCELLED:
        return True
    return state == FAILED and (message or "").startswith(NO_RESULT)
