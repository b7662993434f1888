"""Small scannable fleets for scanning tests: the bundled sample MSRC catalog and Windows 11
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
    return windows_fleet(db_url, [5800, 6000])


def windows_fleet(db_url: str, ubrs: list[int]) -> list[int]:
    """One Windows 11 23H2 endpoint per UBR (WS-1, WS-2, ...), in id order."""
    with session_scope(db_url) as session:
        server = servers.add_server(session, "local", servers.ServerOptions(
            host="h", msrc_source=str(MSRC_DIR), winget_source="none"))
        for _key, raw in msrc.iter_directory(MSRC_DIR):
            store_document(session, server.id, msrc.parse_cvrf(raw), Filters())
        ids = []
        for n, ubr in enumerate(ubrs, 1):
            doc = base_inventory(f"WS-{n}", programs=3)
            doc["os"].update(name="Windows 11 Pro", display_version="23H2", build=22631,
                             ubr=ubr, arch="x64")
            doc["updates"] = []
            ids.append(store_inventory(session, Inventory.model_validate(doc)))
    return ids
