"""Delta inventory: what changed between the inventory the server acknowledged last and the one
just collected, so an endpoint whose 2,000 programs did not move sends a few lines instead of
the whole list (ConfigMgr's delta inventory, in the same spirit).

The server applies the delta to the inventory it stores and refuses it (412) unless the result
is exactly what the agent holds; the agent then sends the whole document. So these rules must be
the server's own, to the letter: a program is its whole dict (two identical entries are two
programs), and the updates are compared after the server's de-duplication of KBs, not as sent.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from agent.schema import normalize_kb
from agent.transport import inventory_digest

# Copied whole from the new document: small, and a change in them is cheaper to resend than to
# describe.
WHOLE_FIELDS = ("schema_version", "hostname", "domain", "os", "ms_facts", "pending_reboot",
                "collected_at")


def _has_date(value: Any) -> bool:
    """The server reads a blank installed_on as unknown, so blank must not win over a date."""
    if isinstance(value, str):
        return bool(value.strip())
    return bool(value)


def unique_updates(doc: dict[str, Any]) -> dict[str, Any]:
    """The KBs the server keeps for this document (one row per KB, its table's key), each with
    the raw installed_on of the entry it keeps: the first one, unless a later entry for the same
    KB knows the date the first did not (QFE and the servicing list often both name a KB).

    Raises ValueError for a KB the server would refuse: no delta can describe that document."""
    kept: dict[str, Any] = {}
    for update in doc.get("updates") or []:
        kb = normalize_kb(update.get("kb"))
        if kb not in kept or (not _has_date(kept[kb]) and _has_date(update.get("installed_on"))):
            kept[kb] = update.get("installed_on")
    return kept


def _canonical(program: Any) -> str:
    return json.dumps(program, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _only_in(items: Iterable[Any], other: Iterable[Any]) -> list[Any]:
    """Multiset difference in document order: the server stores duplicates as they come, so an
    entry listed twice and now once is one removal, not none."""
    remaining = Counter(_canonical(item) for item in other)
    extra = []
    for item in items:
        key = _canonical(item)
        if remaining[key]:
            remaining[key] -= 1
        else:
            extra.append(item)
    return extra


def inventory_delta(old: dict[str, Any], new: dict[str, Any],
                    digest: str | None = None) -> dict[str, Any]:
    """The PATCH body turning `old` (the inventory the server acknowledged) into `new`.

    The digest and counts let the server check the result before it stores anything; an
    exception here (a KB the server would refuse) means: send the whole document instead."""
    old_programs = list(old.get("programs") or [])
    new_programs = list(new.get("programs") or [])
    old_updates = unique_updates(old)
    new_updates = unique_updates(new)
    body: dict[str, Any] = {key: new[key] for key in WHOLE_FIELDS if key in new}
    body["digest"] = digest or inventory_digest(new)  # the caller's, when it has it
    body["program_count"] = len(new_programs)
    body["update_count"] = len(new_updates)
    body["programs_removed"] = _only_in(old_programs, new_programs)
    body["programs_added"] = _only_in(new_programs, old_programs)
    body["updates_removed"] = [kb for kb in old_updates if kb not in new_updates]
    body["updates_added"] = [
        {"kb": kb, "installed_on": installed_on}
        for kb, installed_on in new_updates.items()
        if kb not in old_updates or old_updates[kb] != installed_on
    ]
    return body
