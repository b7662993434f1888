"""The incremental-scan rule (applicability.basis) is sound: after a catalog change, every
endpoint it keeps gets exactly the result it had, on random fleets over the hand-written
catalog of the engine tests; and it keeps most of them when one product changed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pandas as pd
import pytest

from applicability import ScanFrames, scan
from applicability.basis import MS, catalog_digests, changed, profiles
from applicability.frames import make_frame
from applicability.synthetic import synthetic_fleet
from tests.applicability.test_applicability_apps import CATALOG
from tests.applicability.test_applicability_equivalence import MS as MS_ROWS


def _fleet(seed: int) -> ScanFrames:
    ms, apps = make_frame("ms_catalog", MS_ROWS), make_frame("app_catalog", CATALOG)
    return synthetic_fleet(ms, apps, n_endpoints=300, programs_per_endpoint=30, seed=seed)


def _per_endpoint(f: ScanFrames) -> dict[int, tuple]:
    """Each endpoint's whole result: missing rows, ambiguous programs, unmapped notes."""
    r = scan(f)
    out: dict[int, tuple] = {}
    for e in f.endpoints["endpoint_id"].astype(int):
        out[e] = tuple(tuple(map(tuple, frame[frame["endpoint_id"] == e].astype(str).values))
                       for frame in (r.missing, r.ambiguous, r.unmapped))
    return out


def _newest_of(f: ScanFrames, product: str) -> int:
    rows = f.ms_catalog[f.ms_catalog["product"] == product]
    return int(rows.sort_values("fixed_build")["patch_id"].iloc[-1])


def _withdraw_ms(f: ScanFrames) -> ScanFrames:
    """The server stops offering the newest patch of one Windows product."""
    product = f.ms_catalog["product"].value_counts().index[0]
    gone = _newest_of(f, product)
    return replace(f, server_patches=f.server_patches[f.server_patches["patch_id"] != gone])


def _revised_product(f: ScanFrames) -> str:
    return str(f.ms_catalog["product"].value_counts().index[0])


def _revise_ms(f: ScanFrames) -> ScanFrames:
    """MSRC revises one row: the newest FixedBuild of one product moves up."""
    ms = f.ms_catalog.copy()
    gone = _newest_of(f, _revised_product(f))
    row = ms.index[(ms["patch_id"] == gone) & (ms["product"] == _revised_product(f))][0]
    major, minor, build, ubr = str(ms.loc[row, "fixed_build"]).split(".")
    ms.loc[row, "fixed_build"] = f"{major}.{minor}.{build}.{int(ubr) + 5000}"
    return replace(f, ms_catalog=ms)


def _new_app_version(f: ScanFrames) -> ScanFrames:
    """A package gets a newer version with the same names and codes (most releases)."""
    apps = f.app_catalog
    package = apps["package_id"].value_counts().index[0]
    rows = apps[apps["package_id"] == package]
    newest = rows.iloc[[-1]].copy()
    new_id = int(max(apps["patch_id"].max(), f.ms_catalog["patch_id"].max())) + 1
    newest["patch_id"], newest["version"] = new_id, "999.0"
    servers = f.server_patches[f.server_patches["patch_id"] == int(rows["patch_id"].iloc[-1])]
    offered = servers.assign(patch_id=new_id)
    return replace(f, app_catalog=pd.concat([apps, newest], ignore_index=True),
                   server_patches=pd.concat([f.server_patches, offered], ignore_index=True))


def _new_display_name(f: ScanFrames) -> ScanFrames:
    """A package starts listing another DisplayName: who matches what may change."""
    apps = f.app_catalog.copy()
    apps.at[apps.index[0], "display_names"] = [*apps.at[apps.index[0], "display_names"],
                                               "Contoso Studio"]
    return replace(f, app_catalog=apps)


@pytest.mark.parametrize("change", [_withdraw_ms, _revise_ms, _new_app_version,
                                    _new_display_name])
@pytest.mark.parametrize("seed", [1, 2])
def test_kept_endpoints_keep_exactly_their_result(
        change: Callable[[ScanFrames], ScanFrames], seed: int) -> None:
    before = _fleet(seed)
    after = change(before)
    first = scan(before)
    servers = dict(zip(before.availability["endpoint_id"], before.availability["server_id"],
                       strict=True))
    ids = before.endpoints["endpoint_id"].astype(int).tolist()
    basis = profiles(ids, servers, first.touched)
    then = catalog_digests(before.ms_catalog, before.app_catalog, before.server_patches)
    now = catalog_digests(after.ms_catalog, after.app_catalog, after.server_patches)
    kept = [e for e in ids if not changed(then, now, basis[e])]
    old, new = _per_endpoint(before), _per_endpoint(after)
    assert [e for e in kept if old[e] != new[e]] == []
    differing = [e for e in ids if old[e] != new[e]]
    if change is _new_display_name:
        assert then.universe != now.universe and kept == []  # nothing can be kept
    else:
        assert then.universe == now.universe
        assert differing, "the change must change some results for the test to mean anything"
        assert len(kept) > len(ids) // 3  # one product changed: most endpoints are kept


def test_digests_follow_products_servers_and_shared_kbs() -> None:
    f = _fleet(1)
    base = catalog_digests(f.ms_catalog, f.app_catalog, f.server_patches)
    assert base == catalog_digests(f.ms_catalog, f.app_catalog, f.server_patches)
    # One product's row revised: only that product's digest moves...
    revised = _revise_ms(f)
    product = _revised_product(f)
    now = catalog_digests(revised.ms_catalog, revised.app_catalog, revised.server_patches)
    moved = {k for k in base.rows if base.rows[k] != now.rows.get(k)}
    assert moved == {MS + product.casefold()}
    # ...unless its KB also has rows under another product: then both move.
    ms = f.ms_catalog.copy()
    twin = ms.iloc[[0]].assign(product="Windows Server 2099")
    shared = pd.concat([ms, twin], ignore_index=True)
    shared_now = catalog_digests(shared, f.app_catalog, f.server_patches)
    changed_row = shared.copy()
    changed_row.loc[len(ms), "fixed_build"] = "10.0.1.1"
    again = catalog_digests(changed_row, f.app_catalog, f.server_patches)
    first_product = MS + str(ms.iloc[0]["product"]).casefold()
    assert shared_now.rows[first_product] != again.rows[first_product]
    # A server that stops offering a patch moves that server's availability of that product.
    withdrawn = _withdraw_ms(f)
    w = catalog_digests(withdrawn.ms_catalog, withdrawn.app_catalog, withdrawn.server_patches)
    assert w.rows == base.rows
    assert {k for k in base.available if base.available[k] != w.available.get(k)}
    assert w.universe == base.universe
    # JSON round trip (how catalog_states stores them).
    assert type(base).from_json(base.to_json()) == base


def test_engine_reports_the_keys_each_endpoint_touches() -> None:
    f = _fleet(3)
    touched = scan(f).touched
    assert list(touched.columns) == ["endpoint_id", "key"]
    assert touched["key"].str.startswith(("ms:", "app:")).all()
    # Every endpoint with a missing third-party patch touches that package.
    result = scan(f)
    apps = result.missing.merge(f.app_catalog[["patch_id", "package_id"]].drop_duplicates(),
                                on="patch_id")
    pairs = set(zip(touched["endpoint_id"], touched["key"], strict=True))
    assert apps.shape[0] > 0
    assert all((e, "app:" + p) in pairs for e, p in zip(apps["endpoint_id"],
                                                         apps["package_id"], strict=True))
