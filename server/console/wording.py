"""How the console words outcomes and counts (pure, no I/O): a sync that stored some
documents and failed on others, "1 item" against "3 items".

The sync flow records a partly failed sync as Failed with a message that holds both counts
("3 documents failed (…); 6 documents stored (…)"); the console reads it as
"Partially successful · 6 stored, 3 failed", so stored work does not read as lost.
"""

from __future__ import annotations

import re
from typing import Any

from patchflow.install.outcome import plural

__all__ = ["plural", "sync_counts", "sync_detail", "sync_label"]

_FAILED = re.compile(r"^(\d+) documents? failed\b")
_STORED = re.compile(r"\b(\d+) documents? stored\b")


def sync_counts(message: str | None) -> tuple[int, int] | None:
    """(stored, failed) documents of a sync's message, None when it does not say both."""
    failed = _FAILED.search(message or "")
    stored = _STORED.search(message or "")
    if not failed or not stored:
        return None
    return int(stored.group(1)), int(failed.group(1))


def sync_label(server: dict[str, Any]) -> str:
    """The badge of a patch server's last sync."""
    if server.get("starting"):
        return "Starting"
    status = str(server.get("sync_status") or "")
    counts = sync_counts(server.get("sync_message"))
    if status == "Failed" and counts and counts[0] > 0:
        return "Partially successful"
    return status


def sync_detail(server: dict[str, Any]) -> str:
    """'6 documents stored, 3 failed' beside the badge of a sync that did both, else ''."""
    counts = sync_counts(server.get("sync_message"))
    if not counts or not counts[1]:
        return ""
    return f"{plural(counts[0], 'document')} stored, {counts[1]:,} failed"


# CLI options the services name in their one-line errors, as the console's field labels.
FLAG_LABELS = {
    "--patch-server": "Patch server", "--since": "Since", "--until": "Until",
    "--week-of-month": "Week of month", "--frequency": "Frequency", "--proxy": "Proxy",
    "--proxy-user": "Proxy user", "--proxy-password": "Proxy password", "--groups": "Groups",
    "--endpoints": "Endpoints", "--all-affected": "All affected endpoints", "--force":
    "Replace existing data", "--kinds": "Report kinds", "--group": "Group",
    "--upstream": "Upstream", "--wsus-url": "WSUS URL", "--upstream-token": "Replication token",
    "--upstream-server": "Its patch server", "--upstream-fingerprint": "Certificate fingerprint",
    "--winget-packages": "Packages", "--scan-weekday": "Scan day", "--scan-at": "Scan time",
    "--scan-every-weeks": "Every N weeks", "--host": "Host", "--clear-schedule": "No schedule",
    "--subgroups": "Show patches within the subgroup", "--run-if-missed": "Run if missed",
    "--deadline": "the deadline", "--delay-days": "the delay after release",
    "--deadline-days": "the deadline after approval", "--gate": "gate",
    "--delay-minutes": "the delay", "--min-success-rate": "the minimum success rate",
    "--days": "Days", "--from": "From", "--to": "To", "--tz": "Time zone",
}
_HINT = re.compile(r"\s*\((?:see |use |e\.g\. )?`patchflow [^`]*`[^)]*\)")
_TRAILING = re.compile(r"[:;,]\s*(?:use |run |see )?`patchflow [^`]*`[^.]*")
_FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def _label(match: re.Match[str]) -> str:
    flag = match.group(0)
    return FLAG_LABELS.get(flag, flag[2:].replace("-", " ").capitalize())


_SENTENCES = ((re.compile(r"--since (\S+) is after --until (\S+)"),
               r"the start date \1 is after the end date \2"),
              (re.compile(r"is declined: `patchflow undecline [^`]*` first"),
               "is declined: undecline it first"))


def sentence(text: str) -> str:
    """First letter upper case, the rest as it is (Jinja's capitalize lowers the rest)."""
    return text[:1].upper() + text[1:]


def for_web(message: str) -> str:
    """A service's CLI-worded error for the browser: hints to run `patchflow …` commands go,
    option names become field labels, and the sentence starts with a capital."""
    text = message
    for pattern, replacement in _SENTENCES:
        text = pattern.sub(replacement, text)
    text = _HINT.sub("", text)
    text = _TRAILING.sub("", text)
    text = _FLAG.sub(_label, text).strip()
    return text[:1].upper() + text[1:] if text else message
