"""The inventory document: what an endpoint reports, as the agent sends it and `endpoints import`
reads it. Field names are a contract with deployed agents, so they change only with
`schema_version`.

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

SCHEMA_VERSION = 1
MAX_PROGRAMS = 20_000
MAX_UPDATES = 10_000

Arch = Literal["x64", "x86", "arm64"]
_KB = re.compile(r"^(?:KB)?\s*(\d{4,9})$", re.IGNORECASE)
_HOSTNAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$")
_COMPACT_DATE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")


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
    if not isinstance(value, str) or not _HOSTNAME.match(value.strip()):
        raise ValueError(
            f"not a host name: {str(value)[:64]!r} (use letters, digits, '-', '_' or '.')"
        )
    return value.strip().upper()


def _optional_date(value: Any) -> Any:
    """The registry writes InstallDate as YYYYMMDD; accept that as well as ISO, '' as unknown."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        match = _COMPACT_DATE.match(value.strip())
        if match:
            return f"{match.group(1)}-{match.group(2)}-{match.group(3)}"
    return value


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
    build: int = Field(ge=0, le=10_000_000)
    ubr: int = Field(default=0, ge=0, le=100_000_000)
    arch: Arch
    language: Text16 = None
    hotpatch: bool = False
    installation_type: Literal["Client", "Server", "Server Core"] | None = None


class Program(_Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    version: Text128 = None
    publisher: Text255 = None
    product_code: Text128 = None
    upgrade_code: Text64 = None
    arch: Arch | None = None
    scope: Literal["machine", "user"] | None = None
    install_date: OptionalDate = None


class Update(_Strict):
    kb: KB
    installed_on: OptionalDate = None


class Inventory(_Strict):
    schema_version: Literal[1]
    hostname: Hostname
    domain: Text255 = None
    os: OsInfo
    programs: list[Program] = Field(default_factory=list, max_length=MAX_PROGRAMS)
    updates: list[Update] = Field(default_factory=list, max_length=MAX_UPDATES)
    pending_reboot: bool = False
    collected_at: dt.datetime | None = None

    @field_validator("collected_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        # A naive timestamp from a hand-written file is taken as UTC, like the agent writes.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value

    def unique_updates(self) -> list[Update]:
        """One row per KB (the table's key); QFE and the servicing list often both name one."""
        seen: dict[str, Update] = {}
        for update in self.updates:
            known = seen.get(update.kb)
            if known is None or (known.installed_on is None and update.installed_on):
                seen[update.kb] = update
        return list(seen.values())


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
