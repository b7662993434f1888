"""The crash-point hook itself: inert unless PATCHFLOW_FAULT_POINT names the point, and then a
SIGKILL on the Nth time the point is reached, not before."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

SCRIPT = ("from patchflow.ops import faults\n"
          "for n in range(1, 4):\n"
          "    print(n, flush=True)\n"
          "    faults.point('demo.point')\n"
          "print('done', flush=True)\n")


def _run(value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PATCHFLOW_FAULT_POINT"}
    if value is not None:
        env["PATCHFLOW_FAULT_POINT"] = value
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=60)


def test_inert_unless_named() -> None:
    for value in (None, "", "other.point", "demo.pointer@1"):
        result = _run(value)
        assert (result.returncode, result.stdout.split()) == (0, ["1", "2", "3", "done"])


def test_kills_at_the_nth_hit() -> None:
    first = _run("demo.point")
    assert (first.returncode, first.stdout.split()) == (-signal.SIGKILL, ["1"])
    second = _run("demo.point@2")
    assert (second.returncode, second.stdout.split()) == (-signal.SIGKILL, ["1", "2"])
