"""The inventory pack round trip: every value a program can hold comes back as it went in, in
order; anything that is not a pack reads as "no pack" (the scan then reads the rows)."""

from __future__ import annotations

import json
import zlib

from patchflow.fleet.programs_pack import PACK_COLUMNS, pack, unpack

PROGRAMS = [
    ("7-Zip 25.01 (x64)", "25.01", "Igor Pavlov", "{23170F69-40C1-2702-2501-000001000000}",
     None, "x64"),
    # A lone surrogate (orjson refuses it: the stdlib's escaped form is written and read back),
    # NUL and control characters, astral-plane text, JSON look-alikes, empty strings.
    ("broken \ud800 name", "\x00\t\n", "Café 😀", "", '["not", "a pack"]', None),
    ("null", None, None, None, None, None),
]


def test_round_trip_keeps_values_and_order() -> None:
    columns = unpack(pack(PROGRAMS))
    assert columns is not None and len(columns) == len(PACK_COLUMNS)
    assert list(zip(*columns, strict=True)) == PROGRAMS
    assert unpack(pack([])) == [[]] * len(PACK_COLUMNS)
    # Compressed: a fleet's repetitive names take a fraction of their JSON.
    many = PROGRAMS[:1] * 200
    assert len(pack(many)) * 5 < len(json.dumps(list(zip(*many, strict=True))))


def test_anything_else_is_no_pack() -> None:
    for value in (None, "", b"", "text", b"not zlib", zlib.compress(b"{"),
                  zlib.compress(b'{"a": 1}'), zlib.compress(b"[[1], [2]]"),
                  zlib.compress(json.dumps([[1], [], [], [], [], []]).encode()),
                  zlib.compress(json.dumps([1, 2, 3, 4, 5, 6]).encode())):
        assert unpack(value) is None, value
