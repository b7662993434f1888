"""An inventory uploaded through the real HTTPS agent API is scanned in the background: the
endpoint's missing patches are current moments after it reports, without a flow run."""

from __future__ import annotations

import time

from models.db import session_scope
from patchflow.catalog import servers
from patchflow.catalog.catalog_store import store_document
from patchflow.sample_catalog import MSRC_DIR
from patchflow.scanning.scan_process import ScanProcess
from patchflow.scanning.service import RESCANS
from sources import msrc
from sources.filters import Filters
from tests.fixtures.agent.harness import Api, api_on_both_databases, base_inventory

api = api_on_both_databases("rescan", scope="function")


def test_upload_triggers_background_rescan(api: Api) -> None:
    import sqlalchemy as sa

    with session_scope(api.db_url) as session:
        server = servers.add_server(session, "local", servers.ServerOptions(
            host="h", msrc_source=str(MSRC_DIR), winget_source="none"))
        for _key, raw in msrc.iter_directory(MSRC_DIR):
            store_document(session, server.id, msrc.parse_cvrf(raw), Filters())
    with api.client() as http:
        headers = api.enroll(http, "WS-0042")
        inventory = base_inventory("WS-0042", programs=2)
        inventory["os"].update(name="Windows 11 Pro", display_version="23H2", build=22631,
                               ubr=5800, arch="x64")
        inventory["updates"] = []
        response = http.put("/api/v1/agent/inventory", json=inventory, headers=headers)
        assert response.status_code < 300, response.text
    from models.db import get_engine

    # The hook runs after the response is sent, and the queue waits a moment to gather more.
    deadline = time.monotonic() + 60
    state = "Not Scanned"
    while state == "Not Scanned" and time.monotonic() < deadline:
        time.sleep(0.2)
        with get_engine(api.db_url).connect() as conn:
            state = conn.execute(sa.text(
                "SELECT scan_state FROM endpoints WHERE hostname = 'WS-0042'")).scalar_one()
    assert RESCANS.wait_idle(60)
    with get_engine(api.db_url).connect() as conn:
        kbs = set(conn.execute(sa.text(
            "SELECT p.kb FROM missing_patches m JOIN patches p ON p.id = m.patch_id "
            "JOIN endpoints e ON e.id = m.endpoint_id WHERE e.hostname = 'WS-0042'")).scalars())
        state = conn.execute(sa.text(
            "SELECT scan_state FROM endpoints WHERE hostname = 'WS-0042'")).scalar_one()
    assert kbs == {"KB5900110", "KB5900150"}
    assert state == "Missing Patches"
    # On MariaDB the server's rescans ran in a process of their own (scan_process).
    assert isinstance(RESCANS.scan, ScanProcess) == api.db_url.startswith("mysql")
