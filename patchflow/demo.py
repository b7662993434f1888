"""`patchflow demo`: the whole workflow on the embedded default, from the bundled sample catalog.

The demo uses its own home (`.patchflow-demo` beside the default home unless
PATCHFLOW_DEMO_HOME says otherwise) and starts from scratch every run, so it is safe to run twice
and never touches a real installation's data.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

DEFAULT_DEMO_HOME = "./.patchflow-demo"


def demo_home() -> Path:
    return Path(os.environ.get("PATCHFLOW_DEMO_HOME", DEFAULT_DEMO_HOME)).expanduser().resolve()


def prepare_home() -> Path:
    """Wipe and point this process at the demo home, on SQLite."""
    home = demo_home()
    if home.exists():
        if not (home / "patchflow.db").exists() and any(home.iterdir()):
            from patchflow.errors import UserError

            raise UserError(f"{home} exists and is not a patchflow demo home: not wiping it")
        shutil.rmtree(home)
    home.mkdir(parents=True)
    os.environ["PATCHFLOW_HOME"] = str(home)
    os.environ.pop("PATCHFLOW_DATABASE_URL", None)
    os.environ["PREFECT_HOME"] = str(home / "prefect")
    return home
