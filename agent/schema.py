"""The inventory contract shared by the agent and the server: field names, enumerations, limits
and the host-name and KB rules. Standard library only, so the agent's distribution carries it
without the server's packages; the server's pydantic model (patchflow/fleet/inventory.py) is built
from these same values, so the two cannot drift apart.

`check` is the agent's pre-flight look at a document it is about to send (a simulated inventory
file written by hand): the required fields, their kinds and the enumerations, worded as the
server words them. The server stays the judge of everything else (lengths, dates, plausibility).
"""

from __future__ import annotations

import re
from typing import Any

SCHEMA_VERSION = 1
MAX_PROGRAMS = 20_000
MAX_UPDATES = 10_000
MAX_MS_FACTS = 200

ARCHES = ("x64", "x86", "arm64")
SCOPES = ("machine", "user")
INSTALLATION_TYPES = ("Client", "Server", "Server Core")
MS_FACT_KINDS = ("dotnet_framework", "click_to_run", "sql_server", "exchange", "sharepoint",
                 "visual_studio", "defender_engine")

TOP_FIELDS = ("schema_version", "hostname", "domain", "os", "ms_facts", "pending_reboot",
              "collected_at", "programs", "updates")
OS_FIELDS = ("name", "display_version", "build", "ubr", "arch", "language", "hotpatch",
             "installation_type")
PROGRAM_FIELDS = ("name", "version", "publisher", "product_code", "upgrade_code", "arch",
                  "scope", "install_date")
UPDATE_FIELDS = ("kb", "installed_on")
MS_FACT_FIELDS = ("kind", "name", "version", "detail")

_KB = re.compile(r"^(?:KB)?\s*(\d{4,9})$", re.IGNORECASE)
HOSTNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")


def normalize_kb(value: Any) -> str:
    """'5034123', 'kb5034123', 5034123 → 'KB5034123'; anything else is not a KB number."""
    text = str(value).strip() if isinstance(value, str | int) else ""
    match = _KB.match(text)
    if not match:
        raise ValueError(f"not a KB number: {str(value)[:32]!r}")
    return f"KB{int(match.group(1))}"


def normalize_hostname(value: Any) -> str:
    """Windows host names are case-insensitive; storing them upper-case (as Windows reports
    them) makes lookups exact on SQLite and MariaDB alike, so the unique index is used."""
    if not isinstance(value, str) or not HOSTNAME.fullmatch(value.strip()):
        raise ValueError(
            f"not a host name: {str(value)[:64]!r} (use letters, digits, '-', '_' or '.')"
        )
    return value.strip().upper()


def check(doc: Any) -> None:
    """Raise ValueError (`field: message`, the server's wording) for the first field that the
    server would refuse for its shape; a document that passes may still fail a finer rule."""
    _fields(doc, "", TOP_FIELDS, ("schema_version", "hostname", "os"))
    if doc["schema_version"] != SCHEMA_VERSION or isinstance(doc["schema_version"], bool):
        raise ValueError(f"schema_version: Input should be {SCHEMA_VERSION}")
    try:
        normalize_hostname(doc["hostname"])
    except ValueError as exc:
        raise ValueError(f"hostname: {exc}") from None
    os_info = doc["os"]
    _fields(os_info, "os.", OS_FIELDS, ("name", "build", "arch"))
    if not isinstance(os_info["build"], int) or isinstance(os_info["build"], bool):
        raise ValueError("os.build: Input should be a valid integer")
    _choice(os_info, "os.", "arch", ARCHES)
    _choice(os_info, "os.", "installation_type", INSTALLATION_TYPES)
    for key, fields, required, limit in (
            ("programs", PROGRAM_FIELDS, ("name",), MAX_PROGRAMS),
            ("updates", UPDATE_FIELDS, ("kb",), MAX_UPDATES),
            ("ms_facts", MS_FACT_FIELDS, ("kind",), MAX_MS_FACTS)):
        items = doc.get(key, [])
        if not isinstance(items, list):
            raise ValueError(f"{key}: Input should be a valid list")
        if len(items) > limit:
            raise ValueError(f"{key}: List should have at most {limit} items")
        for index, item in enumerate(items):
            _fields(item, f"{key}.{index}.", fields, required)
            _choice(item, f"{key}.{index}.", "arch", ARCHES)
            _choice(item, f"{key}.{index}.", "scope", SCOPES)
            _choice(item, f"{key}.{index}.", "kind", MS_FACT_KINDS)
            if key == "updates":
                try:
                    normalize_kb(item["kb"])
                except ValueError as exc:
                    raise ValueError(f"{key}.{index}.kb: {exc}") from None


def _fields(value: Any, where: str, known: tuple[str, ...], required: tuple[str, ...]) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{where.rstrip('.') or 'document'}: Input should be an object")
    for name in required:
        if value.get(name) is None:
            raise ValueError(f"{where}{name}: Field required")
    for name in value:
        if name not in known:
            raise ValueError(f"{where}{name}: Extra inputs are not permitted")


def _choice(value: dict[str, Any], where: str, name: str, allowed: tuple[str, ...]) -> None:
    if value.get(name) is not None and value[name] not in allowed:
        raise ValueError(f"{where}{name}: Input should be "
                         + ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}")
