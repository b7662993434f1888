"""Two processes interning the same catalog state and scan profiles at once (`serve --workers
2` rescanning uploads, a scan flow beside them): the one that loses the insert must still find
the winner's row, though its transaction began before that row was committed (MariaDB's
REPEATABLE READ snapshot), and neither scan may be left "running"."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from applicability.basis import Profile
from models import CatalogState, Endpoint, Scan, ScanProfile
from models.db import session_scope
from patchflow.scanning import basis_store
from patchflow.scanning.service import load_catalog, scan_now


def test_the_loser_of_an_intern_race_finds_the_winners_rows(db_url: str) -> None:
    with session_scope(db_url) as session:
        catalog = load_catalog(session)
    profiles = {"p1": Profile(server_id=None, keys=("ms:Windows 11",)),
                "p2": Profile(server_id=None, keys=("app:VideoLAN.VLC",))}
    with session_scope(db_url) as late:
        late.scalar(select(func.count()).select_from(CatalogState))  # its snapshot starts here
        with session_scope(db_url) as first:  # another process, committed meanwhile
            state = basis_store.catalog_state_id(first, catalog)
            first_ids = basis_store._profile_ids(first, {"p1": profiles["p1"]})
        assert basis_store.catalog_state_id(late, catalog) == state
        ids = basis_store._profile_ids(late, profiles)
        assert ids["p1"] == first_ids["p1"] and ids["p2"] not in first_ids.values()
    with session_scope(db_url) as session:
        assert session.scalar(select(func.count()).select_from(ScanProfile)) == 2


def test_a_failed_rescan_is_recorded_as_failed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATCHFLOW_DATABASE_URL", db_url)
    with session_scope(db_url) as session:
        session.add(Endpoint(hostname="WS-1", revoked=False, hotpatch=False,
                             pending_reboot=False, roaming=False, scan_state="Not Scanned"))
        session.flush()
        endpoint_id = session.scalar(select(Endpoint.id))
        # A real failure in the middle of the batch: the table its basis goes to is gone.
        session.execute(text("ALTER TABLE catalog_states RENAME TO catalog_states_gone"))
    try:
        with pytest.raises(DBAPIError):
            scan_now([endpoint_id])
    finally:  # the MariaDB test database is shared by the tests that follow
        with session_scope(db_url) as session:
            session.execute(text("ALTER TABLE catalog_states_gone RENAME TO catalog_states"))
    with session_scope(db_url) as session:
        scan = session.scalars(select(Scan)).one()
        assert scan.status == "failed" and scan.finished_at is not None
        assert "catalog_states" in (scan.message or "") and "\n" not in (scan.message or "")
