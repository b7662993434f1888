"""The inventory document: what an endpoint reports, as the agent sends it and `endpoints import`
reads it. Field names are a contract with deployed agents, so they change only with
`schema_version`; the values both sides share (enumerations, limits, the host-name and KB rules)
live in the agent's `agent/schema.py`, which carries no server dependency.

Limits mirror the database columns: a value that would not fit is a validation error (422 with
the field named) instead of a truncation on SQLite and a driver error on MariaDB.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
)

from agent.schema import (
    ARCHES,
    INSTALLATION_TYPES,
    MAX_MS_FACTS,
    MAX_PROGRAMS,
    MAX_UPDATES,
    MS_FACT_KINDS,
    SCHEMA_VERSION,
    SCOPES,
    normalize_hostname,
    normalize_kb,
)

Arch = Literal[ARCHES]
_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_NUMBER = re.compile(r"^\s*[-+]?\d+(\.\d*)?\s*$")
# collected_at outside this window is a broken clock or a forged document, not a time to store.
EARLIEST_COLLECTED = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
FUTURE_SLACK = dt.timedelta(days=1)


def _optional_date(value: Any) -> Any:
    """The registry writes InstallDate as YYYYMMDD; accept that as well as ISO, '' as unknown.
    A number is refused: pydantic would read it as seconds since 1970."""
    if type(value) is str and len(value) == 10 and value[4] == "-" and value[7] == "-":
        # The agent's form, checked first (this runs for every program and KB): with two
        # dashes inside, neither pattern below can match, so pydantic parses it as before.
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        match = _COMPACT_DATE.match(value.strip())
        if match:
            return f"{match.group(1)}-{match.group(2)}-{match.group(3)}"
        if _NUMBER.match(value):
            raise ValueError("a date is YYYY-MM-DD or YYYYMMDD, not a number")
        return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    raise ValueError(f"a date is a string (YYYY-MM-DD or YYYYMMDD), not {_kind(value)}")


def _timestamp(value: Any) -> Any:
    """collected_at is an ISO 8601 string. Numbers (and numeric strings), which pydantic would
    read as seconds since 1970, are refused: `0` or `true` is no time of collection."""
    if value is None or isinstance(value, dt.datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"an ISO 8601 date and time is a string, not {_kind(value)}")
    if _NUMBER.match(value):
        raise ValueError("an ISO 8601 date and time (2026-11-29T10:00:00Z), not a number")
    return value


def _whole_number(value: Any) -> Any:
    """`true` is not 1 here (pydantic's lax mode would take it)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be the whole number 1, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        return None
    return value


Hostname = Annotated[str, BeforeValidator(normalize_hostname)]
KB = Annotated[str, BeforeValidator(normalize_kb)]
OptionalDate = Annotated[dt.date | None, BeforeValidator(_optional_date)]


# Optional text that fits its column; blank means unknown (None).
_BLANK = BeforeValidator(_blank_to_none)
Text16 = Annotated[Annotated[str, StringConstraints(strip_whitespace=True, max_length=16)] | None,
                   _BLANK]
Text64 = Annotated[Annotated[str, StringConstraints(strip_whitespace=True, max_length=64)] | None,
                   _BLANK]
Text128 = Annotated[
    Annotated[str, StringConstraints(strip_whitespace=True, max_length=128)] | None, _BLANK]
Text255 = Annotated[
    Annotated[str, StringConstraints(strip_whitespace=True, max_length=255)] | None, _BLANK]


class _Strict(BaseModel):
    # Unknown fields are refused: a misspelt field would otherwise be dropped silently.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OsInfo(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    display_version: Text16 = None
    # strict: `true` is not build 1, `22631.5` is not a build, "22631" is not a number.
    build: int = Field(ge=0, le=10_000_000, strict=True)
    # None when the agent could not read it (systeminfo has no UBR): unknown, never 0.
    ubr: int | None = Field(default=None, ge=0, le=100_000_000, strict=True)
    arch: Arch
    language: Text16 = None
    hotpatch: bool = Field(default=False, strict=True)
    installation_type: Literal[INSTALLATION_TYPES] | None = None


class Program(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    version: Text128 = None
    publisher: Text255 = None
    product_code: Text128 = None
    upgrade_code: Text64 = None
    arch: Arch | None = None
    scope: Literal[SCOPES] | None = None
    install_date: OptionalDate = None


class Update(_Strict):
    kb: KB
    installed_on: OptionalDate = None


MsFactKind = Literal[MS_FACT_KINDS]


class MsFact(_Strict):
    """Microsoft software the Uninstall key does not describe well enough for the scan (the .NET
    Framework release, Click-to-Run build and channel, SQL Server instances and their servicing
    line...); see docs/microsoft-products.md for what each kind carries."""

    kind: MsFactKind
    name: Text128 = None
    version: Text64 = None
    detail: Text64 = None


class _Reported(_Strict):
    """What an upload carries whole, a change (`InventoryDelta`) as well as a full inventory:
    the host, its OS and Microsoft facts, a few flags. Only the long lists travel as changes."""

    schema_version: Annotated[Literal[SCHEMA_VERSION], BeforeValidator(_whole_number)]
    hostname: Hostname
    domain: Text255 = None
    os: OsInfo
    ms_facts: list[MsFact] = Field(default_factory=list, max_length=MAX_MS_FACTS)
    pending_reboot: bool = Field(default=False, strict=True)
    collected_at: Annotated[dt.datetime | None, BeforeValidator(_timestamp)] = None

    @field_validator("collected_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is None:
            return None
        # A naive timestamp from a hand-written file is taken as UTC, like the agent writes.
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        latest = dt.datetime.now(dt.UTC) + FUTURE_SLACK
        if not EARLIEST_COLLECTED <= value <= latest:
            raise ValueError(
                f"{value.isoformat()} is not a plausible time of collection: between "
                f"{EARLIEST_COLLECTED:%Y-%m-%d} and a day from now"
            )
        return value


class Inventory(_Reported):
    programs: list[Program] = Field(default_factory=list, max_length=MAX_PROGRAMS)
    updates: list[Update] = Field(default_factory=list, max_length=MAX_UPDATES)

    def unique_updates(self) -> list[Update]:
        """One row per KB (the table's key); QFE and the servicing list often both name one."""
        seen: dict[str, Update] = {}
        for update in self.updates:
            known = seen.get(update.kb)
            if known is None or (known.installed_on is None and update.installed_on):
                seen[update.kb] = update
        return list(seen.values())

    def counts(self) -> tuple[int, int]:
        """(programs, KBs) as stored: what an upload's answer reports."""
        return len(self.programs), len(self.unique_updates())


Digest = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class InventoryDelta(_Reported):
    """An agent's inventory as changes against the one the server acknowledged last (the
    `If-Match` of `PATCH /api/v1/agent/inventory`): a changed 200-program inventory usually
    differs in a program or two, and parsing and comparing all of them was most of the server's
    work per upload. The agent computes `digest` and the counts from its whole new document;
    the server checks that every removed row is stored and the counts come out equal, else
    refuses the change (412) and the agent uploads the whole inventory."""

    digest: Digest = Field(description="The new inventory's canonical SHA-256 "
                                       "(agent.transport.inventory_digest)")
    program_count: int = Field(ge=0, le=MAX_PROGRAMS, strict=True)
    update_count: int = Field(ge=0, le=MAX_UPDATES, strict=True)
    programs_removed: list[Program] = Field(default_factory=list, max_length=MAX_PROGRAMS)
    programs_added: list[Program] = Field(default_factory=list, max_length=MAX_PROGRAMS)
    updates_removed: list[KB] = Field(default_factory=list, max_length=MAX_UPDATES)
    updates_added: list[Update] = Field(
        default_factory=list, max_length=MAX_UPDATES,
        description="KBs new to the inventory, or whose installation date changed")

    def counts(self) -> tuple[int, int]:
        return self.program_count, self.update_count


def describe_errors(errors: Sequence[Any]) -> str:
    """The first failing field as `os.arch: Input should be ...`: one line a human can act on.

    Takes pydantic's error dicts, so FastAPI's request errors and ours read the same.
    """
    first = errors[0] if errors else {}
    loc = [part for part in first.get("loc", ()) if part != "body"]
    field = ".".join(str(part) for part in loc)
    message = str(first.get("msg", "invalid value")).replace("\n", " ")
    message = message.removeprefix("Value error, ")
    return f"{field}: {message}" if field else message


def validate_documents(data: Any) -> list[Inventory]:
    """One inventory object or a list of them (the `endpoints import` file format); a failure
    is a ValueError naming the document's index and the field."""
    items = data if isinstance(data, list) else [data]
    docs: list[Inventory] = []
    for index, item in enumerate(items):
        try:
            docs.append(Inventory.model_validate(item))
        except ValidationError as exc:
            detail = describe_errors(exc.errors(include_url=False))
            if isinstance(data, list):
                detail = f"document {index + 1} of {len(items)}: {detail}"
            raise ValueError(detail) from None
    return docs
