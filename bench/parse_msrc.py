"""Time parse_cvrf over an offline MSRC mirror (default: ../shared/fixtures/msrc).

Usage: python bench/parse_msrc.py [folder]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sources.msrc import iter_directory, parse_cvrf


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "msrc"
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    total = 0.0
    for key, raw in iter_directory(folder):
        start = time.perf_counter()
        doc = parse_cvrf(raw, key)
        elapsed = time.perf_counter() - start
        total += elapsed
        print(f"{key:20} {len(raw) / 1e6:6.2f} MB  {len(doc.patches):4} KBs  {elapsed:6.3f} s")
    print(f"total {total:.3f} s")


if __name__ == "__main__":
    main()
