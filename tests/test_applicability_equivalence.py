"""The vectorised scan and the reference loop agree on random fleets (no real data needed).

The catalog is the hand-written one of the other applicability tests (chains, gaps, hotpatches,
Security Only, IE Cumulative, swapped PuTTY codes, shared names); the fleet is random.
"""

from __future__ import annotations

import pandas as pd
import pytest

from applicability import build_frames, scan
from applicability.frames import make_frame
from applicability.reference import scan_reference
from applicability.synthetic import synthetic_fleet
from tests.test_applicability_apps import CATALOG
from tests.test_applicability_ms import CHAIN, S08, S22, kb

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
