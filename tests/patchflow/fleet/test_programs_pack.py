"""The inventory pack round trip: every value a program can hold comes back as it went in, in
order; anything that is not a pack reads as "no pack" (the scan then reads the rows)."""

from __future__ import annotations

import json
import zlib

import pytest

from patchflow.fleet.programs_pack import (
    FRAME_PROGRAMS,
    MAX_FRAMES,
    PACK_COLUMNS,
    changed,
    pack,
    pack_columns,
    unpack,
)

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


# --- changes appended as frames -------------------------------------------------------------

EXTRA = ("VLC media player", "3.0.21", "VideoLAN", None, None, "x64")


def _expected(programs: list, removed: list, added: list) -> list:
    left = list(programs)
    for program in removed:
        left.remove(program)
    return left + list(added)


def test_small_changes_are_appended_and_read_back_applied() -> None:
    data, programs = pack(PROGRAMS), list(PROGRAMS)
    steps = [([], [EXTRA]), ([PROGRAMS[0]], []), ([EXTRA], [PROGRAMS[0], EXTRA]),
             ([PROGRAMS[1]], [PROGRAMS[1]])]  # the surrogate goes through a frame too
    for removed, added in steps:
        before = data
        data, count = changed(data, removed, added)
        programs = _expected(programs, removed, added)
        # Appended: the stored value is kept as it was, byte for byte, and only grows.
        assert data.startswith(before) and len(data) > len(before)
        assert count == len(programs)
        assert list(zip(*unpack(data), strict=True)) == programs
    # Folding gives the pack written whole: the frames are only a way of writing it.
    assert pack_columns(unpack(data)) == pack(programs)


def test_a_pack_is_folded_after_its_last_frame_and_for_a_large_change() -> None:
    data, programs = pack(PROGRAMS), list(PROGRAMS)
    for _ in range(MAX_FRAMES):
        data, _count = changed(data, [], [EXTRA])
        programs.append(EXTRA)
    assert len(data) > len(pack(programs))  # MAX_FRAMES frames behind the base
    data, count = changed(data, [EXTRA], [])
    programs.remove(EXTRA)
    assert data == pack(programs) and count == len(programs)
    many = [EXTRA] * (FRAME_PROGRAMS + 1)
    assert changed(pack(PROGRAMS), [], many)[0] == pack(PROGRAMS + many)


def test_a_pack_written_before_frames_is_read_and_folded() -> None:
    columns = [list(column) for column in zip(*PROGRAMS[::2], strict=True)]
    old = zlib.compress(json.dumps(columns).encode())  # what migration 0017 and earlier wrote
    assert unpack(old) == columns
    data, count = changed(old, [], [EXTRA])
    assert data == pack([*PROGRAMS[::2], EXTRA]) and count == 3


def test_frames_that_do_not_apply_read_as_no_pack() -> None:
    # The writer trusts the rows for what a frame removes; if they ever disagreed with the
    # pack, the scan reads the rows rather than a wrong list.
    data, count = changed(pack(PROGRAMS), [EXTRA], [])
    assert count == len(PROGRAMS) - 1 and unpack(data) is None
    with pytest.raises(ValueError):
        changed(data, [], [EXTRA] * (FRAME_PROGRAMS + 1))  # a fold has to decode it
    with pytest.raises(ValueError):
        changed(b"not a pack", [], [EXTRA])
    with pytest.raises(ValueError):  # appended unread, but never to a negative count
        changed(pack(PROGRAMS[:1]), [EXTRA, EXTRA], [])
    with pytest.raises(ValueError):  # decoded: the removed program is checked
        changed(pack(PROGRAMS), [EXTRA] * (FRAME_PROGRAMS + 1), [])


def test_damaged_frames_read_as_no_pack() -> None:
    base = pack(PROGRAMS)
    one, _ = changed(base, [], [EXTRA])
    two, _ = changed(one, [PROGRAMS[2]], [])
    frame = two[len(one):]
    assert unpack(two) is not None
    for damaged in (two[:-1],  # truncated
                    two[:-4] + b"XXXX",  # not a trailer
                    base + frame,  # frame 2 straight after the base: frame 1 is missing
                    one + frame[:-16] + frame[-12:-8] + b"\xff\x00\x00\x00" + frame[-4:],
                    one[:-16] + one[-16:].replace(b"\x01\x00\x00\x00", b"\x05\x00\x00\x00", 1)):
        assert unpack(damaged) is None, damaged
