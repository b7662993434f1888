"""The vectorised scan and the reference loop agree on random fleets (no real data needed).

The catalog is the hand-written one of the other applicability tests (chains, gaps, hotpatches,
Security Only, IE Cumulative, swapped PuTTY codes, shared names); the fleet is random.
"""

from __future__ import annotations

import pickle
from dataclasses import replace

import pandas as pd
import pytest

from applicability import ScanFrames, ScanResult, build_frames, prepare, scan
from applicability.frames import make_frame
from applicability.prepared import NAME_KEYS
from applicability.reference import scan_reference
from applicability.synthetic import synthetic_fleet
from tests.applicability.test_applicability_apps import CATALOG
from tests.applicability.test_applicability_ms import CHAIN, S08, S22, kb

MS = [
    *CHAIN,
    kb(4, "KB5048685", "10.0.22631.4602", "KB5099999", date="2024-12-10"),
    kb(5, "KB5040442", "10.0.22621.3880", "KB5039212", date="2024-07-09"),
    kb(6, "KB5036909", "10.0.20348.2402", "KB5035857", S22, date="2024-04-09"),
    kb(7, "KB5037782", "10.0.20348.2461", "KB5036909", S22, date="2024-05-14"),
    kb(8, "KB5039227", "10.0.20348.2527", "KB5037782", S22, date="2024-06-11"),
    kb(9, "KB5037848", "10.0.20348.2458", None, S22, "SecurityHotpatchUpdate", "2024-05-14"),
    kb(
        12,
        "KB5039330",
        "10.0.20348.2522",
        "KB5037848",
        S22,
        "Security Hotpatch Update",
        "2024-06-11",
    ),
    kb(13, "KB5044356", "6.1.7601.27366", "KB5043129", S08, "Monthly Rollup", "2024-10-08"),
    kb(14, "KB5044321", "6.1.7601.27366", None, S08, "Security Only", "2024-10-08"),
    kb(15, "KB5041770", "1.001", "KB5040426", "Windows Server 2012 R2", "IE Cumulative"),
    kb(16, "KB5044343", "6.3.9600.22221", "KB5043138", "Windows Server 2012 R2", "Monthly Rollup"),
    kb(17, "KB5046630", None, None, "Windows Server 2012 R2", "IE Cumulative"),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_scan_equals_reference_on_a_random_fleet(seed: int) -> None:
    ms, apps = make_frame("ms_catalog", MS), make_frame("app_catalog", CATALOG)
    f = synthetic_fleet(ms, apps, n_endpoints=250, programs_per_endpoint=30, seed=seed)
    result = scan(f)
    ref_missing, ref_amb, ref_unmapped = scan_reference(f)
    pd.testing.assert_frame_equal(result.missing, ref_missing)
    pd.testing.assert_frame_equal(result.ambiguous, ref_amb)
    pd.testing.assert_frame_equal(result.unmapped, ref_unmapped)
    assert len(result.missing) > 100


def test_empty_frames_scan_to_empty_results() -> None:
    result = scan(build_frames())
    assert result.missing.empty and result.ambiguous.empty and result.unmapped.empty
    assert list(result.missing.columns) == [
        "endpoint_id",
        "patch_id",
        "product",
        "installed_version",
        "available_version",
        "reason",
    ]


def _batch(f: ScanFrames, ids: set[int]) -> ScanFrames:
    """The frames cut down to some endpoints; the catalog frames are the very same objects."""

    def cut(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["endpoint_id"].isin(ids)]

    return replace(
        f,
        endpoints=cut(f.endpoints),
        installed_kbs=cut(f.installed_kbs),
        programs=cut(f.programs),
        availability=cut(f.availability),
    )


def _union(results: list[ScanResult]) -> ScanResult:
    def join(name: str, order: list[str]) -> pd.DataFrame:
        frames = [getattr(r, name) for r in results]
        out = pd.concat(frames, ignore_index=True).sort_values(order, kind="stable")
        return out.reset_index(drop=True).astype(frames[0].dtypes.to_dict())

    return ScanResult(
        missing=join("missing", ["endpoint_id", "patch_id"]),
        ambiguous=join("ambiguous", ["endpoint_id", "program", "package_ids", "reason"]),
        unmapped=join("unmapped", ["endpoint_id"]),
    )


@pytest.mark.parametrize("seed", [1, 4])
def test_batches_sharing_one_prepared_catalog_equal_one_scan_of_the_union(seed: int) -> None:
    ms, apps = make_frame("ms_catalog", MS), make_frame("app_catalog", CATALOG)
    f = synthetic_fleet(ms, apps, n_endpoints=300, programs_per_endpoint=30, seed=seed)
    whole = scan(f)
    prepared = prepare(f.ms_catalog, f.app_catalog, f.server_patches)
    ids = f.endpoints["endpoint_id"].tolist()
    # Interleaved batches, so every batch mixes products and both patch servers; the last one
    # rescans endpoints an earlier batch saw (the memoised names and matches are reused).
    batches = [set(ids[k::3]) for k in range(3)]
    results = [scan(_batch(f, b), prepared) for b in batches]
    again = scan(_batch(f, batches[0]), prepared)
    assert len(prepared.name_key) > 0 and len(prepared.match) > 0
    union = _union(results)
    for name in ("missing", "ambiguous", "unmapped"):
        pd.testing.assert_frame_equal(getattr(union, name), getattr(whole, name))
        pd.testing.assert_frame_equal(getattr(again, name), getattr(results[0], name))
    assert len(whole.missing) > 100 and not whole.ambiguous.empty and not whole.unmapped.empty
    # A prepared catalog survives pickling (its own memos are left behind and start empty; the
    # matching keys, which depend on no catalog, are the receiving process's shared memo).
    thawed = pickle.loads(pickle.dumps(prepared))
    assert len(thawed.match) == 0 and len(thawed.name_used) == 0
    assert thawed.name_key is NAME_KEYS and prepared.name_key is NAME_KEYS
    pd.testing.assert_frame_equal(scan(_batch(f, batches[1]), thawed).missing, results[1].missing)


def test_prepared_catalog_refuses_frames_of_another_catalog() -> None:
    ms, apps = make_frame("ms_catalog", MS), make_frame("app_catalog", CATALOG)
    f = synthetic_fleet(ms, apps, n_endpoints=20, programs_per_endpoint=10, seed=5)
    prepared = prepare(f.ms_catalog, f.app_catalog, f.server_patches)
    # An equal copy is accepted (compared once coerced), a changed catalog is not.
    same = scan(replace(f, ms_catalog=f.ms_catalog.copy()), prepared)
    pd.testing.assert_frame_equal(same.missing, scan(f).missing)
    with pytest.raises(ValueError, match="ms_catalog differs"):
        scan(replace(f, ms_catalog=f.ms_catalog.iloc[1:]), prepared)
    with pytest.raises(ValueError, match="server_patches differs"):
        scan(replace(f, server_patches=f.server_patches.iloc[:-1]), prepared)
