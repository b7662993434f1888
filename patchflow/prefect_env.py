"""Prefect settings patchflow needs, applied before Prefect is first imported.

Prefect reads its settings at import time, so every entry point calls `configure()` first:
Prefect's home (and so its database) goes under PATCHFLOW_HOME, analytics are off for the
embedded server, and the logs stay at INFO without Prefect's own banner noise.
"""

from __future__ import annotations

import os
from pathlib import Path

from patchflow import config


def configure() -> None:
    os.environ.setdefault("PREFECT_HOME", str(config.home() / "prefect"))
    if config.home().is_dir():
        # Prefect's temporary server cannot create its SQLite file in a missing folder.
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("DO_NOT_TRACK", "1")  # no client telemetry notice in a terminal
    os.environ.setdefault("PREFECT_UI_ENABLED", "true")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    # The temporary server waits up to this long to start on a loaded 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
