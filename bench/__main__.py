"""Run every benchmark: `python -m bench` (what `make bench` does).

Each bench module has a `main()`. They run one after another, each in its own Python process,
so one benchmark's environment, Prefect server and peak memory do not leak into the next. The
usual ones run first in a fixed order; any other module in bench/ with a `main()` follows. A
missing module is reported with a line and skipped.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PREFERRED = ("sync", "scan", "agent_api", "report")


def _has_main(path: Path) -> bool:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return False
    return any(isinstance(node, ast.FunctionDef) and node.name == "main" for node in tree.body)


def modules() -> list[tuple[str, bool]]:
    """(name, present) in running order: the preferred names, then the other modules."""
    found = sorted(p.stem for p in BENCH.glob("*.py")
                   if not p.stem.startswith("_") and _has_main(p))
    order = [(name, name in found) for name in PREFERRED]
    return order + [(name, True) for name in found if name not in PREFERRED]


def main(argv: list[str] | None = None) -> int:
    names = argv if argv else None
    failed: list[str] = []
    for name, present in modules():
        if names and name not in names:
            continue
        if not present:
            print(f"bench.{name}: not present in this build, skipped", flush=True)
            continue
        print(f"\n===== bench.{name} =====", flush=True)
        start = time.perf_counter()
        code = subprocess.call(
            [sys.executable, "-c",
             f"import sys; from bench.{name} import main; sys.exit(main() or 0)"],
            cwd=ROOT,
        )
        elapsed = time.perf_counter() - start
        print(f"===== bench.{name}: {'ok' if code == 0 else f'exit {code}'} "
              f"({elapsed:.1f} s) =====", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"\nbenchmarks failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
