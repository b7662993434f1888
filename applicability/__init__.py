"""The scan's applicability engine: pure functions over pandas frames (no I/O, no database).

    from applicability import build_frames, scan, explain
    result = scan(frames)            # ScanResult(missing, ambiguous, unmapped)
    lines = explain(frames, endpoint_id, patch_id)

The frame contract is in `applicability.frames`; the rules in `applicability.microsoft` and
`applicability.thirdparty`; `applicability.reference` is the same rules as a plain loop.
"""

from applicability.engine import ScanResult, explain, scan
from applicability.frames import ScanFrames, build_frames, empty_frames, make_frame

__all__ = [
    "ScanFrames",
    "ScanResult",
    "build_frames",
    "empty_frames",
    "explain",
    "make_frame",
    "scan",
]
