"""The scan's inventory reader (scan_store.load_inventory) gives the same frames on every
database and through every read path: MariaDB's packed per-endpoint JSON read, its plain
fallback, and SQLite's plain read."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from sqlalchemy import insert, text

from models import Endpoint, InstalledProgram, InstalledUpdate
from models.base import utcnow
from models.db import session_scope
from patchflow.scanning import scan_store

# Values a DB driver or a JSON encoder could get wrong: quotes, backslashes, control
# characters, non-ASCII (4-byte UTF-8 too), empty strings, NULLs, JSON look-alikes.
TRICKY = ['7-Zip "quoted" \\ back\\slash', "tab\tnew\nline", "Éditeur ☃ 😀", "", None,
          '["not", "an array"]', "null", "a" * 512]


def _fill(endpoints: int = 5, programs: int = 40) -> list[int]:
    now = utcnow()
    with session_scope() as session:
        session.execute(insert(Endpoint.__table__), [
            {"id": e, "hostname": f"HOST{e}", "os_name": "Windows 11 Pro", "os_build": 22631,
             "os_ubr": 3000 + e, "os_arch": "x64", "hotpatch": e % 2 == 0,
             "installation_type": "Client", "inventory_at": now, "scan_state": "Not Scanned"}
            for e in range(1, endpoints + 1)])
        rows = []
        for e in range(1, endpoints + 1):
            for i in range(programs):
                tricky = TRICKY[(e + i) % len(TRICKY)]
                rows.append({"endpoint_id": e, "name": tricky if tricky is not None else "x",
                             "version": tricky and tricky[:128],
                             "publisher": tricky and tricky[:255], "product_code": f"{{{i}}}",
                             "upgrade_code": None if i % 3 else f"U{i}",
                             "arch": ("x64", "x86", None)[i % 3]})
        # Shuffled ids: the reader must give (endpoint, id) order, not insertion order.
        rows = rows[::-1]
        session.execute(insert(InstalledProgram.__table__), rows)
        session.execute(insert(InstalledUpdate.__table__),
                        [{"endpoint_id": e, "kb": f"KB50{e}"} for e in range(1, endpoints)])
    return list(range(1, endpoints + 2))  # one id without any row at all


def _plain(session, ids: list[int]) -> pd.DataFrame:
    table = InstalledProgram.__table__
    rows = session.execute(
        text("SELECT endpoint_id, name, version, publisher, product_code, upgrade_code, arch "
             f"FROM {table.name} WHERE endpoint_id IN ({','.join(map(str, ids))}) "
             "ORDER BY endpoint_id, id")).all()
    return pd.DataFrame([tuple(r) for r in rows], columns=["endpoint_id",
                                                             *scan_store._PROGRAM_COLUMNS])


def test_programs_read_is_exact_on_every_path(home: Path, db_url: str, monkeypatch) -> None:
    ids = _fill()
    with session_scope() as session:
        expected = _plain(session, ids)
        got = scan_store.load_inventory(session, ids)["programs"]
        pd.testing.assert_frame_equal(got, expected)
        assert len(got) == 5 * 40
        assert got["name"].tolist().count("a" * 512) == 25
        if session.get_bind().dialect.name == "mysql":
            packed = scan_store._read_programs_packed(session, ids)
            assert packed is not None  # the fast path was taken, not the fallback
            pd.testing.assert_frame_equal(packed, expected)
            # Arrays too long for group_concat_max_len come back cut: the reader notices and
            # reads plainly instead of returning a damaged frame.
            monkeypatch.setattr(scan_store, "_PACK_LIMIT", 200)
            assert scan_store._read_programs_packed(session, ids) is None
            again = scan_store.load_inventory(session, ids)["programs"]
            pd.testing.assert_frame_equal(again, expected)
        empty = scan_store.load_inventory(session, [999])["programs"]
        assert empty.empty and list(empty.columns) == list(expected.columns)


def test_engine_drops_unused_programs_first_with_identical_results() -> None:
    """The engine keeps only the programs some rule can use (a Microsoft-looking name, a name
    or code the app index knows) before its per-rule passes: the filler programs of a fleet
    go, the results stay those of the reference loop on the full frames."""
    from dataclasses import replace

    from applicability import prepare, scan
    from applicability.engine import used_programs
    from applicability.frames import make_frame
    from applicability.reference import scan_reference
    from applicability.synthetic import synthetic_fleet
    from tests.applicability.test_applicability_apps import CATALOG
    from tests.applicability.test_applicability_equivalence import MS

    ms, apps = make_frame("ms_catalog", MS), make_frame("app_catalog", CATALOG)
    f = synthetic_fleet(ms, apps, n_endpoints=200, programs_per_endpoint=40, seed=7)
    office = make_frame("programs", [
        {"endpoint_id": int(f.endpoints["endpoint_id"].iloc[0]),
         "name": "Security Update for Microsoft Office 2016 (KB5002635) 64-Bit Edition",
         "version": None, "publisher": "Microsoft Corporation", "arch": "x64"}])
    f = replace(f, programs=pd.concat([f.programs, office], ignore_index=True))
    prepared = prepare(f.ms_catalog, f.app_catalog, f.server_patches)
    used = used_programs(f.programs, prepared)
    assert 0 < len(used) < len(f.programs) / 2
    assert office["name"].iloc[0] in set(used["name"])  # an update entry names a KB: kept
    again = used_programs(f.programs, prepared)  # from the memo this time: the same rows
    pd.testing.assert_frame_equal(again, used)
    result = scan(f, prepared)
    ref_missing, ref_amb, ref_unmapped = scan_reference(f)
    pd.testing.assert_frame_equal(result.missing, ref_missing)
    pd.testing.assert_frame_equal(result.ambiguous, ref_amb)
    pd.testing.assert_frame_equal(result.unmapped, ref_unmapped)
