"""The scan's inventory reader (scan_store.load_inventory) gives the same frames on every
database and through every read path: each endpoint's inventory pack, and the rows of an
endpoint without a usable one."""

from __future__ import annotations

import zlib
from pathlib import Path

import pandas as pd
from sqlalchemy import delete, insert, text

from models import Endpoint, InstalledProgram, InstalledUpdate, InventoryPack
from models.base import utcnow
from models.db import session_scope
from patchflow.fleet.programs_pack import pack, unpack
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


def test_programs_read_is_exact_on_every_path(home: Path, db_url: str) -> None:
    ids = _fill()
    with session_scope() as session:
        expected = _plain(session, ids)
        # No pack yet (rows written by hand, as before migration 0017): rows are read.
        got = scan_store.load_inventory(session, ids)["programs"]
        pd.testing.assert_frame_equal(got, expected)
        assert len(got) == 5 * 40
        assert got["name"].tolist().count("a" * 512) == 25

        # Packs for endpoints 1-3, one of the wrong shape for 4, none for 5: the same frame.
        def packed(e: int) -> bytes:
            rows = expected[expected["endpoint_id"] == e][scan_store._PROGRAM_COLUMNS]
            return pack(rows.itertuples(index=False, name=None))

        session.execute(insert(InventoryPack), [
            *({"endpoint_id": e, "programs": packed(e)} for e in (1, 2, 3)),
            {"endpoint_id": 4, "programs": zlib.compress(b'[["only one column"]]')}])
        mixed = scan_store.load_inventory(session, ids)["programs"]
        pd.testing.assert_frame_equal(mixed, expected)

        # Every endpoint packed: the rows are not read at all (a pack wins over them).
        session.execute(delete(InventoryPack).where(InventoryPack.endpoint_id == 4))
        session.execute(insert(InventoryPack), [
            {"endpoint_id": e, "programs": packed(e)} for e in (4, 5)])
        session.execute(delete(InstalledProgram))
        only_packs = scan_store.load_inventory(session, ids[:-1])["programs"]
        pd.testing.assert_frame_equal(only_packs, expected)

        empty = scan_store.load_inventory(session, [999])["programs"]
        assert empty.empty and list(empty.columns) == list(expected.columns)


def test_a_scan_reads_only_the_programs_a_rule_can_use(home: Path, db_url: str) -> None:
    """With the catalog's preparation (a scan's read), the reader keeps what the engine's first
    step would keep, from packs and from rows alike: the same frame as `used_programs` over
    everything (the engine's results then cannot differ: it starts with that step)."""
    from applicability.engine import prepare, used_programs
    from applicability.frames import make_frame
    from tests.applicability.test_applicability_apps import CATALOG, Z_X64_23
    from tests.applicability.test_applicability_equivalence import MS

    ids = _fill()
    with session_scope() as session:
        session.execute(insert(InstalledProgram), [
            {"endpoint_id": 2, "name": "7-Zip 9.20 (x64 edition)", "version": "9.20",
             "publisher": "Igor Pavlov", "arch": "x64"},
            {"endpoint_id": 3, "name": "Something", "product_code": Z_X64_23, "arch": "x64"},
            {"endpoint_id": 4, "name": "Security Update for Microsoft Office 2016 (KB5002635) "
             "64-Bit Edition", "publisher": "Microsoft Corporation", "arch": "x64"}])
        full = _plain(session, ids)
        for e in (1, 2):  # packs for two endpoints, rows for the others
            rows = full[full["endpoint_id"] == e][scan_store._PROGRAM_COLUMNS]
            session.execute(insert(InventoryPack), [
                {"endpoint_id": e, "programs": pack(rows.itertuples(index=False, name=None))}])
        ms, apps = make_frame("ms_catalog", MS), make_frame("app_catalog", CATALOG)
        prepared = prepare(ms, apps, make_frame("server_patches"))
        used = scan_store.load_inventory(session, ids, prepared)["programs"]
    expected = used_programs(make_frame("programs", full), prepared)
    pd.testing.assert_frame_equal(make_frame("programs", used), expected)
    assert sorted(set(used["endpoint_id"])) == [2, 3, 4] and len(used) == 3
    assert used_programs(expected, prepared) is expected  # nothing left for the engine to drop


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
    # Memos too small for the batch's names (emptied while judging them): the same rows.
    tiny = prepare(f.ms_catalog, f.app_catalog, f.server_patches)
    tiny.name_used.limit = tiny.code_used.limit = 3
    pd.testing.assert_frame_equal(used_programs(f.programs, tiny), used)
    result = scan(f, prepared)
    ref_missing, ref_amb, ref_unmapped = scan_reference(f)
    pd.testing.assert_frame_equal(result.missing, ref_missing)
    pd.testing.assert_frame_equal(result.ambiguous, ref_amb)
    pd.testing.assert_frame_equal(result.unmapped, ref_unmapped)


def test_upgrade_packs_the_programs_already_stored(bare_url: str) -> None:
    """Migration 0017 packs every stored inventory (in chunks), so the first scan after an
    upgrade reads packs; the packs equal the rows in their id order, and an endpoint without
    programs gets an empty pack."""
    from models.db import get_engine
    from tests.support.migrations import migrate

    migrate(bare_url, "0016_incremental_scans")
    engine = get_engine(bare_url)
    version = [t and t[:128] for t in TRICKY]  # the column's limit
    rows = [(e, TRICKY[(e + i) % len(TRICKY)] or "x", version[i % len(TRICKY)], f"P{i}",
             None if i % 2 else f"{{{i}}}", None, ("x64", "x86", None)[i % 3])
            for e in (1, 2) for i in range(30)][::-1]  # ids not in endpoint order
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO endpoints (id, hostname, revoked, hotpatch, "
                          "pending_reboot, roaming, scan_state, inventory_rev) VALUES "
                          "(1, 'A', 0, 0, 0, 0, 'Not Scanned', 0), "
                          "(2, 'B', 0, 0, 0, 0, 'Not Scanned', 0), "
                          "(3, 'EMPTY', 0, 0, 0, 0, 'Not Scanned', 0)"))
        conn.execute(text("INSERT INTO installed_programs (endpoint_id, name, version, "
                          "publisher, product_code, upgrade_code, arch) VALUES "
                          "(:e, :n, :v, :p, :pc, :uc, :a)"),
                     [dict(zip(("e", "n", "v", "p", "pc", "uc", "a"), r, strict=True))
                      for r in rows])
    migrate(bare_url, "0017_programs_pack")
    with engine.connect() as conn:
        packs = dict(conn.execute(text("SELECT endpoint_id, programs FROM inventory_packs")).all())
        stored = conn.execute(text(
            "SELECT endpoint_id, name, version, publisher, product_code, upgrade_code, arch "
            "FROM installed_programs ORDER BY endpoint_id, id")).all()
    for endpoint_id in (1, 2, 3):
        columns = unpack(packs[endpoint_id])
        assert columns is not None
        assert list(zip(*columns, strict=True)) == [
            tuple(r)[1:] for r in stored if r[0] == endpoint_id]
    assert len(unpack(packs[1])[0]) == 30 and unpack(packs[3]) == [[]] * 6
