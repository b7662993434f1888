"""Bounded types for numbers and names that arrive in URLs and bodies. A database id is a signed
64-bit integer and an exit code a Windows DWORD (or its signed reading): anything outside is
refused with 422 by validation, before it can reach a driver that raises OverflowError."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import Field

from agent.schema import HOSTNAME

# The largest value a BIGINT (and SQLite's INTEGER) column holds.
MAX_DB_ID = 2**63 - 1
# Windows exit codes are DWORDs; agents may report them signed (-1073741819) or unsigned.
MIN_EXIT_CODE = -(2**31)
MAX_EXIT_CODE = 2**32 - 1

DbId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="A database id", examples=[1])]
# agent/schema.py's host-name rule (blanks around it are stripped before the check).
HOSTNAME_PATTERN = HOSTNAME.pattern
JobId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="An install job id", examples=[1])]
TokenId = Annotated[int, Path(ge=1, le=MAX_DB_ID, description="An enrollment token id",
                              examples=[1])]
ExitCode = Annotated[int, Field(ge=MIN_EXIT_CODE, le=MAX_EXIT_CODE,
                                description="The installer's exit code (DWORD, signed or not)",
                                examples=[0, 3010, -2147024891])]
# A patch by id, KB number or PACKAGE@VERSION: printable, one line, bounded.
PatchRef = Annotated[str, Path(min_length=1, max_length=300, pattern=r"^[^\x00-\x1f\x7f]+$",
                               description="A patch id, KB number (KB5034441) or "
                                           "PACKAGE@VERSION", examples=["KB5034441"])]
