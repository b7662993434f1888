"""The scan's applicability engine: pure functions over pandas frames (no I/O, no database).

    from applicability import build_frames, explain, prepare, scan
    result = scan(frames)            # ScanResult(missing, ambiguous, unmapped)
    prepared = prepare(ms_catalog, app_catalog, server_patches)   # once per run, then per batch:
    result = scan(frames, prepared)  # frames carrying those same catalog frames
    lines = explain(frames, endpoint_id, patch_id)

The frame contract is in `applicability.frames`; the rules in `applicability.microsoft` and
`applicability.thirdparty`; `applicability.reference` is the same rules as a plain loop.
"""

from applicability.engine import ScanResult, explain, prepare, scan
from applicability.frames import ScanFrames, build_frames, empty_frames, make_frame
from applicability.prepared import PreparedCatalog

__all__ = [
    "PreparedCatalog",
    "ScanFrames",
    "ScanResult",
    "build_frames",
    "empty_frames",
    "explain",
    "make_frame",
    "prepare",
    "scan",
]
