"""The server keeps what starting left alive out of the garbage collector's full passes while it
serves, and collects its youngest objects less often (see server.app._lifespan); it gives both
back when it stops."""

from __future__ import annotations

import gc
import os
import ssl
from pathlib import Path

import httpx

from patchflow.ops import tls
from server.app import YOUNG_COLLECTION, create_app
from server.run import BackgroundServer
from server.settings import ServerSettings


def test_startup_objects_are_frozen_while_serving_and_released_after(
    sqlite_home: Path, tmp_path: Path
) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    tls.generate_self_signed("localhost", cert, key)
    gc.unfreeze()
    before = gc.get_threshold()
    app = create_app(ServerSettings(database_url=os.environ["PATCHFLOW_DATABASE_URL"]))
    assert gc.get_freeze_count() == 0
    with BackgroundServer(app, cert, key) as server:
        # The app and its routes are among the frozen: a full pass no longer traverses them.
        assert gc.get_freeze_count() > 10_000
        # Young objects get time to die before a collection would promote them.
        assert gc.get_threshold() == (YOUNG_COLLECTION, *before[1:]) != before
        context = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=server.url, verify=context, timeout=30) as http:
            assert http.get("/api/v1/health").status_code == 200
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
