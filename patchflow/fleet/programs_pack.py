"""An endpoint's installed programs as the scan reads them, packed into one value
(`inventory_packs.programs`): six JSON arrays, one per scan column, in the document's
order, zlib-compressed.

A scan reads ~150 programs per endpoint. As rows, MariaDB spent most of a 100,000-endpoint scan
reading them (grouping them into JSON at query time still cost its CPU); one value per endpoint,
written with the rows when an inventory is stored and decoded in C, is several times cheaper to
read (issue 17). Columns rather than rows: building a frame from six lists is several times
faster than from 150 small ones. Compressed: a pack is about a fifth of its JSON, and fetching
20,000 packs from MariaDB took 0.15 s of the server's time instead of 2 s; decompressing them
costs ~20 µs each.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

# The installed_programs columns a scan reads, in the pack's order.
PACK_COLUMNS = ("name", "version", "publisher", "product_code", "upgrade_code", "arch")
_LEVEL = 1  # zlib's fastest: the pack is written on every changed upload


def pack(programs: Iterable[Sequence[Any]]) -> bytes:
    """The pack of programs given as (name, version, publisher, product_code, upgrade_code,
    arch) tuples, in the document's order."""
    # Transposed by zip in C: appending value by value was a fifth of storing an inventory.
    columns = [list(column) for column in zip(*programs, strict=True)]
    if not columns:
        columns = [[] for _ in PACK_COLUMNS]
    elif len(columns) != len(PACK_COLUMNS):
        raise ValueError(f"a program is {len(columns)} values, not {len(PACK_COLUMNS)}")
    return pack_columns(columns)


def pack_columns(columns: Sequence[Sequence[Any]]) -> bytes:
    """The pack of the six column lists `unpack` gives (an inventory changed in place)."""
    try:
        text = orjson.dumps(columns)
    except TypeError:  # text orjson refuses (a lone surrogate): the stdlib escapes it
        text = json.dumps(columns, separators=(",", ":")).encode()
    return zlib.compress(text, _LEVEL)


def unpack(data: object) -> list[list[Any]] | None:
    """The six column lists of a stored pack, or None when there is none or it is not one (the
    caller then reads the rows)."""
    if not isinstance(data, bytes | bytearray | memoryview) or not data:
        return None
    try:
        text = zlib.decompress(data)
    except zlib.error:
        return None
    try:
        columns = orjson.loads(text)
    except ValueError:
        try:  # what orjson refuses (a lone surrogate escaped by pack) the stdlib reads
            columns = json.loads(text)
        except ValueError:
            return None
    if (not isinstance(columns, list) or len(columns) != len(PACK_COLUMNS)
            or not all(isinstance(c, list) for c in columns)
            or len({len(c) for c in columns}) != 1):
        return None
    return columns
