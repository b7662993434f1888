"""Which Microsoft products beyond the OS an endpoint was mapped to, for `endpoints show`.

The scan maps stored Uninstall entries and agent facts to MSRC product names with
`applicability.msproducts`; this reads the same stored rows and applies the same mapping, so
an administrator sees what is covered (and what cannot be judged) without running a scan.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from sqlalchemy.orm import Session

from applicability.frames import make_frame
from applicability.msapps import map_inventory
from applicability.osmap import msrc_product
from models import Endpoint
from patchflow.scanning.scan_store import ms_facts_frame, read_programs


def endpoint_ms_products(session: Session, endpoint: Endpoint) -> list[dict[str, Any]]:
    """product, kind, installed_version, source, note: one row per (product, source)."""
    os_product, _ = msrc_product(
        endpoint.os_name, endpoint.os_display_version, endpoint.os_build, endpoint.os_arch,
        endpoint.installation_type)
    programs = make_frame("programs", read_programs(session, [endpoint.id]))
    facts = ms_facts_frame([endpoint.id], [endpoint.ms_facts])
    mapped = map_inventory(programs, facts, {endpoint.id: os_product})
    rows = []
    for r in mapped.drop_duplicates(["product", "source"]).sort_values("product").itertuples():
        rows.append({
            "product": r.product,
            "kind": r.kind,
            "installed_version": None if pd.isna(r.version) else r.version,
            "source": r.source,
            "note": r.note or None,
        })
    return rows
