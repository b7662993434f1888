"""What a job came to, in the words an administrator reads: Succeeded, Partially succeeded,
Failed, Cancelled or Running (pure, no I/O).

A job's stored status only says whether its flow is still driving it ("done" once every item
is final); a job whose items all failed is "done" too. The console and `jobs` views show this
outcome instead, computed from the item counts, so "done" never reads as success.
"""

from __future__ import annotations

from patchflow.install import states as st

RUNNING, SUCCEEDED, PARTIAL, FAILED, CANCELLED = (
    "Running", "Succeeded", "Partially succeeded", "Failed", "Cancelled")
# A reboot pending is a success that waits for a restart: the patch is on the machine.
GOOD = (st.SUCCEEDED, st.REBOOT_PENDING)


def job_outcome(status: str, counts: dict[str, int]) -> str:
    """The outcome of a job from its status and its items' state counts."""
    if status == st.JOB_CANCELLED:
        return CANCELLED
    if status not in st.JOB_FINAL or any(counts.get(s, 0) for s in st.OPEN):
        return RUNNING
    good = sum(counts.get(s, 0) for s in GOOD)
    bad = counts.get(st.FAILED, 0) + counts.get(st.CANCELLED, 0)
    if good and not bad:
        return SUCCEEDED
    if good:
        return PARTIAL
    return FAILED if counts.get(st.FAILED, 0) else CANCELLED


def plural(n: int, one: str, many: str | None = None) -> str:
    """'1 item', '3 items': counts in messages read as sentences."""
    return f"{n:,} {one if n == 1 else (many or one + 's')}"
