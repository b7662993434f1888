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

Layout: the base (the zlib-compressed columns), then up to MAX_FRAMES frames, each an agent's
change as plain JSON ([removed programs, added programs]); every part is followed by a
16-byte trailer (programs after it, part index, part length, tag). A pack of an earlier
version is a base alone, with no trailer, and reads the same.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

# The installed_programs columns a scan reads, in the pack's order.
PACK_COLUMNS = ("name", "version", "publisher", "product_code", "upgrade_code", "arch")
_LEVEL = 1  # zlib's fastest: a base is written on every whole upload and every fold
# Every part ends with this: the programs after it, its index (0: the base), its length, a tag.
# Read from the end, so a writer learns the count without decoding anything.
_TRAILER = struct.Struct("<III4s")
_TAG = b"PFp1"
# An agent's changes are appended as a frame (a few programs as JSON) instead of decoding,
# changing and re-encoding the whole pack: that was ~115 µs of a change's ~800 µs in the
# server (issue 17). Past this many frames, or for a change of more programs than a frame
# takes, the writer folds them into a new base, so a scan never applies more than this many.
MAX_FRAMES = 8
FRAME_PROGRAMS = 16

Row = Sequence[Any]  # one program's PACK_COLUMNS values


def pack(programs: Iterable[Row]) -> bytes:
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
    base = zlib.compress(_dumps(columns), _LEVEL)
    return base + _TRAILER.pack(len(columns[0]), 0, len(base), _TAG)


def changed(data: object, removed: Sequence[Row], added: Sequence[Row]) -> tuple[bytes, int]:
    """The pack after `removed` (one occurrence each) and `added` (at the end), and how many
    programs it then holds. Raises ValueError when `data` is not a usable pack or, when it is
    decoded, a removed program is not in it.

    A small change to a pack of few frames is appended unread, trusting the caller to have
    checked the removed programs against the rows; anything else is folded into a new base."""
    last = _part(data, len(data)) if isinstance(data, bytes | bytearray | memoryview) else None
    if last is not None and last[1] < MAX_FRAMES and len(removed) + len(added) <= FRAME_PROGRAMS:
        count = last[0] - len(removed) + len(added)
        if count < 0:
            raise ValueError("more programs removed than the pack holds")
        frame = _dumps([removed, added])
        return bytes(data) + frame + _TRAILER.pack(count, last[1] + 1, len(frame), _TAG), count
    columns = unpack(data)
    if columns is None:
        raise ValueError("no usable pack")
    _apply(columns, removed, added)
    return pack_columns(columns), len(columns[0])


def unpack(data: object) -> list[list[Any]] | None:
    """The six column lists of a stored pack, its frames applied, or None when there is none or
    it is not one (the caller then reads the rows)."""
    if not isinstance(data, bytes | bytearray | memoryview) or not data:
        return None
    frames: list[tuple[bytes | bytearray | memoryview, int]] = []  # the last first
    end, part = len(data), _part(data, len(data))
    if part is None:  # a pack written before frames: a base with no trailer
        base, count = data, None
    else:
        for index in range(part[1], 0, -1):  # the last trailer's index: the frames behind it
            if part is None or part[1] != index:
                return None
            start = end - _TRAILER.size - part[2]
            frames.append((data[start:end - _TRAILER.size], part[0]))
            end, part = start, _part(data, start)
        if part is None or part[1] != 0 or end != _TRAILER.size + part[2]:
            return None
        base, count = data[:part[2]], part[0]
    columns = _base_columns(base)
    if columns is None or (count is not None and len(columns[0]) != count):
        return None
    for frame, after in reversed(frames):
        change = _loads(frame)
        if (not isinstance(change, list) or len(change) != 2
                or not all(isinstance(rows, list) for rows in change)):
            return None
        try:
            _apply(columns, *change)
        except ValueError:
            return None
        if len(columns[0]) != after:
            return None
    return columns


def _part(data: bytes | bytearray | memoryview, end: int) -> tuple[int, int, int] | None:
    """The trailer ending at `end`: (programs after the part, its index, its length)."""
    if end < _TRAILER.size:
        return None
    count, index, length, tag = _TRAILER.unpack_from(data, end - _TRAILER.size)
    if tag != _TAG or length > end - _TRAILER.size:
        return None
    return count, index, length


def _base_columns(data: bytes | bytearray | memoryview) -> list[list[Any]] | None:
    stream = zlib.decompressobj()
    try:
        text = stream.decompress(data)
    except zlib.error:
        return None
    if not stream.eof or stream.unused_data:  # a cut pack, or frames without their trailers
        return None
    columns = _loads(text)
    if (not isinstance(columns, list) or len(columns) != len(PACK_COLUMNS)
            or not all(isinstance(c, list) for c in columns)
            or len({len(c) for c in columns}) != 1):
        return None
    return columns


def _apply(columns: list[list[Any]], removed: Iterable[Row], added: Iterable[Row]) -> None:
    removed, added = list(removed), list(added)
    if not all(isinstance(p, list | tuple) and len(p) == len(columns) for p in removed + added):
        raise ValueError("a program is not one value per column")
    for program in removed:
        _drop(columns, program)
    for program in added:
        for column, value in zip(columns, program, strict=True):
            column.append(value)


def _drop(columns: list[list[Any]], program: Row) -> None:
    """Remove one occurrence of `program` from the columns."""
    names = columns[0]
    start = 0
    while True:
        index = names.index(program[0], start)  # ValueError: not there
        if all(column[index] == value for column, value in zip(columns, program, strict=True)):
            for column in columns:
                del column[index]
            return
        start = index + 1


def _dumps(value: object) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # text orjson refuses (a lone surrogate): the stdlib escapes it
        return json.dumps(value, separators=(",", ":")).encode()


def _loads(data: bytes | bytearray | memoryview) -> object:
    try:
        return orjson.loads(data)
    except ValueError:
        try:  # what orjson refuses (a lone surrogate escaped by _dumps) the stdlib reads
            return json.loads(bytes(data))
        except ValueError:
            return None
