"""Who hears how a patch cycle went, and what they read.

Recipients are `[cycle] email` in patchflow.toml (comma-separated), mailed through the SMTP
settings of `patchflow mail set`. The report step mails the regular reports under the run's
outcome (one message: the cycle's summary, then the reports), so a halted cycle or a failed
gate reaches them with its reason; a manual gate that starts waiting sends a short notice,
since nothing happens until someone answers it.
"""

from __future__ import annotations

from html import escape

from patchflow import config
from patchflow.reporting import mail


def recipients() -> list[str]:
    """The `[cycle] email` addresses; an invalid one is a one-line UserError."""
    return mail.parse_addresses(config.setting("cycle", "email"), "[cycle] email address")


def outcome_heading(policy: str, run_id: int, halted: bool) -> str:
    return f"Patch cycle {run_id} of {policy}: {'halted' if halted else 'completed'}"


def gate_notice(policy: str, run_id: int, ring: str, why: str) -> tuple[str, str, str]:
    """(subject, text, html) of the notice that a manual gate waits for an answer."""
    subject = f"Patch cycle {run_id} of {policy} waits at the gate before ring {ring}"
    lines = [subject, "", why, "",
             f"Resume it with `patchflow cycle resume {run_id}` (or --reject), from the "
             "console's Patch Cycle page, or with Resume in the Prefect UI."]
    html = "".join(f"<p>{escape(line)}</p>" for line in lines if line)
    return subject, "\n".join(lines) + "\n", f"<!doctype html><html><body>{html}</body></html>"
