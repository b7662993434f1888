"""Ordering of vendor version strings as vendors write them.

Vendors are inconsistent about padding ("0.81" vs "0.81.0.0", "3.0.20" vs "3.0.20.0") and about
digit groups ("26.002.21931", "8.0.4010.10"), so segments compare as integers and trailing zero
segments are ignored. Letters are rare in Windows product versions; where they occur ("1.0b2",
"2.0-rc1") they are treated as pre-release markers that sort below the plain number, which is
deterministic and matches the usual meaning.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"\d+|[A-Za-z]+")
_LEADING_V = re.compile(r"^\s*[vV](?=\d)")

# Each token becomes a (rank, number, text) triple so ints and strings never meet in a comparison.
# The end marker ranks between text and numbers: "1.0" > "1.0rc1" but "1.0" < "1.0.1".
_TEXT, _END, _NUM = 0, 1, 2
_END_TOKEN = (_END, 0, "")
_ZERO = (_NUM, 0, "")


def version_key(s: str) -> tuple:
    """Sort key for a version string: equal keys mean the versions are the same release."""
    tokens = _TOKEN.findall(_LEADING_V.sub("", s or ""))
    key: list[tuple[int, int, str]] = [_END_TOKEN]
    for t in reversed(tokens):
        token = (_NUM, int(t), "") if t.isdigit() else (_TEXT, 0, t.lower())
        # A zero just before text or the end is padding: "1.0.0" == "1", "1.0rc1" == "1rc1".
        if token == _ZERO and key[-1][0] != _NUM:
            continue
        key.append(token)
    return tuple(reversed(key))


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as a is older than, the same as, or newer than b."""
    ka, kb = version_key(a), version_key(b)
    return (ka > kb) - (ka < kb)
