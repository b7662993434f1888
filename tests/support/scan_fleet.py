"""A small scannable fleet for scanning tests: the bundled sample MSRC catalog and two Windows 11
endpoints a few updates behind, stored as file imports."""

from __future__ import annotations

from models.db import session_scope
from patchflow.catalog import servers
from patchflow.catalog.catalog_store import store_document
from patchflow.fleet.inventories import store_inventory
from patchflow.fleet.inventory import Inventory
from patchflow.sample_catalog import MSRC_DIR
from sources import msrc
from sources.filters import Filters
from tests.fixtures.agent.harness import base_inventory


def two_endpoint_fleet(db_url: str) -> list[int]:
    """The endpoints' ids (WS-1, WS-2), both with missing patches once scanned."""
    with session_scope(db_url) as session:
        server = servers.add_server(session, "local", servers.ServerOptions(
            host="h", msrc_source=str(MSRC_DIR), winget_source="none"))
        for _key, raw in msrc.iter_directory(MSRC_DIR):
            store_document(session, server.id, msrc.parse_cvrf(raw), Filters())
        ids = []
        for host, ubr in (("WS-1", 5800), ("WS-2", 6000)):
            doc = base_inventory(host, programs=3)
            doc["os"].update(name="Windows 11 Pro", display_version="23H2", build=22631,
                             ubr=ubr, arch="x64")
            doc["updates"] = []
            ids.append(store_inventory(session, Inventory.model_validate(doc)))
    return ids
