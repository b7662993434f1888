"""Microsoft rules of the scan engine on small hand-checked frames.

Builds and KB numbers are real (Windows 11 23H2 and Server 2022, autumn 2024) so the expected
reasons read like what an administrator will see.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from applicability import ScanFrames, build_frames, explain, scan
from applicability.reference import scan_reference

W11 = "Windows 11 Version 23H2 for x64-based Systems"
S22 = "Windows Server 2022"
S08 = "Windows Server 2008 R2 for x64-based Systems Service Pack 1"


def ep(eid: int, ubr: int | None, **kw: Any) -> dict[str, Any]:
    row = {
        "endpoint_id": eid,
        "hostname": f"pc{eid}",
        "os_name": "Windows 11 Pro",
        "display_version": "23H2",
        "build": 22631,
        "ubr": ubr,
        "arch": "x64",
        "hotpatch": False,
        "installation_type": "Client",
    }
    row.update(kw)
    return row


def srv(eid: int, ubr: int | None, hotpatch: bool = False, **kw: Any) -> dict[str, Any]:
    return ep(
        eid,
        ubr,
        os_name="Windows Server 2022 Datacenter",
        display_version="21H2",
        build=20348,
        hotpatch=hotpatch,
        installation_type="Server",
        **kw,
    )


def kb(
    pid: int,
    number: str,
    fixed: str | None,
    sup: str | None = None,
    product: str = W11,
    subtype: str = "Security Update",
    date: str = "2024-10-08",
) -> dict[str, Any]:
    return {
        "patch_id": pid,
        "kb": number,
        "product": product,
        "fixed_build": fixed,
        "supersedes_kb": sup,
        "subtype": subtype,
        "severity": "Important",
        "release_date": date,
    }


# Windows 11 23H2, Sep -> Oct -> Nov 2024 cumulative updates.
CHAIN = [
    kb(1, "KB5043076", "10.0.22631.4169", "KB5041585", date="2024-09-10"),
    kb(2, "KB5044285", "10.0.22631.4317", "KB5043076", date="2024-10-08"),
    kb(3, "KB5046633", "10.0.22631.4460", "KB5044285", date="2024-11-12"),
]


def frames(
    endpoints: list[dict],
    catalog: list[dict],
    installed: tuple = (),
    available: list[int] | None = None,
    server_of: dict[int, int] | None = None,
) -> ScanFrames:
    patch_ids = [c["patch_id"] for c in catalog] if available is None else available
    server_of = server_of or {e["endpoint_id"]: 1 for e in endpoints}
    return build_frames(
        endpoints=endpoints,
        ms_catalog=catalog,
        installed_kbs=[{"endpoint_id": e, "kb": k} for e, k in installed],
        availability=[{"endpoint_id": e, "server_id": s} for e, s in server_of.items()],
        server_patches=[{"server_id": 1, "patch_id": p} for p in sorted(set(patch_ids))]
        + [{"server_id": 2, "patch_id": p} for p in (1, 2)],
    )


def missing(f: ScanFrames) -> dict[tuple[int, int], str]:
    """(endpoint, patch) -> reason, after checking the reference loop agrees."""
    result = scan(f)
    ref_missing, ref_amb, ref_unmapped = scan_reference(f)
    pd.testing.assert_frame_equal(result.missing, ref_missing)
    pd.testing.assert_frame_equal(result.ambiguous, ref_amb)
    pd.testing.assert_frame_equal(result.unmapped, ref_unmapped)
    return dict(
        zip(
            zip(result.missing["endpoint_id"], result.missing["patch_id"], strict=True),
            result.missing["reason"],
            strict=True,
        )
    )


def test_build_just_below_at_and_above_the_fixed_build() -> None:
    got = missing(frames([ep(1, 4459), ep(2, 4460), ep(3, 4461)], CHAIN))
    assert got == {
        (1, 3): "build 22631.4459 < fixed 22631.4460; KB5046633 not installed; supersedes KB5044285"
    }


def test_newest_cumulative_is_reported_once_not_each_month() -> None:
    got = missing(frames([ep(1, 3000)], CHAIN))
    assert list(got) == [(1, 3)]


def test_several_chain_heads_left_by_gaps_still_give_one_report() -> None:
    # MSRC lists the Dec update superseding a KB the catalog lacks: two heads, one report.
    gap = [*CHAIN, kb(4, "KB5048685", "10.0.22631.4602", "KB5099999", date="2024-12-10")]
    got = missing(frames([ep(1, 4000)], gap))
    assert list(got) == [(1, 4)]
    lines = explain(frames([ep(1, 4000)], gap), 1, 3)
    assert any("KB5048685 (fixed 22631.4602) is reported instead" in ln for ln in lines)
    assert lines[-1] == "verdict: not missing"


def test_superseding_kb_installed_hides_the_old_one() -> None:
    # Nov is not on the server, so Oct is the candidate; Nov is installed (reboot pending).
    f = frames(
        [ep(1, 4000), ep(2, 4000), ep(3, None)],
        CHAIN,
        available=[1, 2],
        installed=[(1, "KB5046633"), (3, "5046633")],
    )
    got = missing(f)
    assert set(got) == {(2, 2)}
    assert "installed KB5046633 supersedes it" in " ".join(explain(f, 1, 2))


def test_installed_kb_unknown_to_the_catalog_does_not_hide_anything() -> None:
    got = missing(frames([ep(1, None)], CHAIN, installed=[(1, "KB4000001")]))
    assert got == {
        (1, 3): "build 22631 (UBR unknown), fixed 22631.4460: KB rule; KB5046633 not installed, "
        "nor a KB superseding it; supersedes KB5044285"
    }


def test_installed_newer_cumulative_outside_the_chain_satisfies_with_unknown_ubr() -> None:
    # No supersedence link (MSRC gap), but the installed Dec update's build is higher.
    cat = [*CHAIN, kb(4, "KB5048685", "10.0.22631.4602", None, date="2024-12-10")]
    got = missing(frames([ep(1, None)], cat, available=[1, 2, 3], installed=[(1, "KB5048685")]))
    assert got == {}


def test_windows_10_product_name_on_a_windows_11_build() -> None:
    got = missing(frames([ep(1, 4000, os_name="Windows 10 Pro", display_version=None)], CHAIN))
    assert list(got) == [(1, 3)]


def test_sibling_build_of_the_same_servicing_family_applies() -> None:
    # MSRC quotes 22H2's build (22621) on a 23H2 row: same UBR line, so it applies.
    cat = [kb(1, "KB5040442", "10.0.22621.3880", "KB5039212", date="2024-07-09")]
    assert list(missing(frames([ep(1, 3737)], cat))) == [(1, 1)]
    # ...but a 23H2 build quoted on a 24H2 row is another branch and never applies.
    p24 = "Windows 11 Version 24H2 for x64-based Systems"
    cat = [kb(1, "KB5055528", "10.0.22621.5189", product=p24)]
    assert missing(frames([ep(1, 1000, display_version="24H2", build=26100)], cat)) == {}


def test_non_build_fixed_build_falls_back_to_the_kb_rule() -> None:
    s12 = "Windows Server 2012 R2"
    cat = [
        kb(1, "KB5040426", "1.001", "KB5034120", product=s12, subtype="IE Cumulative"),
        kb(2, "KB5041770", "1.001", "KB5040426", product=s12, subtype="IE Cumulative"),
        kb(3, "KB5044343", "6.3.9600.22221", "KB5043138", product=s12, subtype="Monthly Rollup"),
        kb(4, "KB5046630", None, None, product=s12, subtype="IE Cumulative"),
    ]
    host = {
        "os_name": "Windows Server 2012 R2 Standard",
        "display_version": None,
        "build": 9600,
        "installation_type": "Server",
    }
    eps = [ep(1, 22221, **host), ep(2, 22221, **host), ep(3, 22221, **host)]
    got = missing(frames(eps, cat, installed=[(2, "KB5041770"), (3, "KB5046630")]))
    assert got == {
        (1, 2): "fixed build '1.001' is not a Windows build: KB rule; KB5041770 not installed, "
        "nor a KB superseding it; supersedes KB5040426",
        (1, 4): "no fixed build: KB rule; KB5046630 not installed, nor a KB superseding it",
        (2, 4): "no fixed build: KB rule; KB5046630 not installed, nor a KB superseding it",
        (3, 2): "fixed build '1.001' is not a Windows build: KB rule; KB5041770 not installed, "
        "nor a KB superseding it; supersedes KB5040426",
    }


def test_security_only_is_covered_by_the_monthly_rollup() -> None:
    cat = [
        kb(1, "KB5044356", "6.1.7601.27366", "KB5043129", S08, "Monthly Rollup", "2024-10-08"),
        kb(2, "KB5044321", "6.1.7601.27366", None, S08, "Security Only", "2024-10-08"),
        kb(3, "KB5046687", "6.1.7601.27415", "KB5044356", S08, "Monthly Rollup", "2024-11-12"),
        kb(4, "KB5046705", "6.1.7601.27415", None, S08, "Security Only", "2024-11-12"),
    ]
    host = {
        "os_name": "Windows Server 2008 R2 Enterprise",
        "display_version": None,
        "build": 7601,
        "installation_type": "Server",
    }
    eps = [ep(1, 27300, **host), ep(2, None, **host), ep(3, None, **host)]
    got = missing(frames(eps, cat, installed=[(2, "KB5046687"), (3, "KB5044356")]))
    # One report per machine: the newest rollup; the Security Only KBs are not listed besides it.
    assert set(got) == {(1, 3), (3, 3)}


def test_hotpatch_kbs_only_for_hotpatch_endpoints() -> None:
    cat = [
        kb(1, "KB5036909", "10.0.20348.2402", "KB5035857", S22, date="2024-04-09"),
        kb(2, "KB5037782", "10.0.20348.2461", "KB5036909", S22, date="2024-05-14"),
        kb(3, "KB5039227", "10.0.20348.2527", "KB5037782", S22, date="2024-06-11"),
        kb(4, "KB5037848", "10.0.20348.2458", None, S22, "SecurityHotpatchUpdate", "2024-05-14"),
        kb(
            5,
            "KB5039330",
            "10.0.20348.2522",
            "KB5037848",
            S22,
            "Security Hotpatch Update",
            "2024-06-11",
        ),
    ]
    eps = [
        srv(1, 2402),  # not hotpatch-enabled: the regular June update
        srv(2, 2458, hotpatch=True),  # on the April baseline + May hotpatch: June hotpatch
        srv(3, 2522, hotpatch=True),  # June hotpatch in place: regular June not needed
        srv(4, 2340, hotpatch=True),  # behind its baseline: the regular update instead
    ]
    f = frames(eps, cat)
    got = missing(f)
    assert set(got) == {(1, 3), (2, 5), (4, 3)}
    assert got[(2, 5)].endswith(
        "; hotpatch for this hotpatch endpoint; regular KB5039227 not needed with it"
    )
    assert "hotpatch KB5039330 set aside" in got[(4, 3)]
    assert "hotpatch and the endpoint is not hotpatch-enabled" in " ".join(explain(f, 1, 5))


def test_first_hotpatch_after_a_baseline_is_gated_by_the_baseline_update() -> None:
    cat = [
        kb(1, "KB5036909", "10.0.20348.2402", "KB5035857", S22, date="2024-04-09"),
        kb(2, "KB5037782", "10.0.20348.2461", "KB5036909", S22, date="2024-05-14"),
        kb(4, "KB5037848", "10.0.20348.2458", None, S22, "SecurityHotpatchUpdate", "2024-05-14"),
    ]
    got = missing(frames([srv(1, 2402, hotpatch=True), srv(2, 2340, hotpatch=True)], cat))
    assert set(got) == {(1, 4), (2, 2)}


def test_availability_filters_patches() -> None:
    eps = [ep(1, 3000), ep(2, 3000), ep(3, 3000)]
    # Endpoint 2's server only has Sep and Oct: Oct is its newest candidate; 3 has no server.
    got = missing(frames(eps, CHAIN, server_of={1: 1, 2: 2}))
    assert set(got) == {(1, 3), (2, 2)}
    f = frames(eps, CHAIN, server_of={1: 1, 2: 2})
    assert "not available on patch server 2" in " ".join(explain(f, 2, 3))


def test_unmapped_endpoints_are_reported_not_treated_as_up_to_date() -> None:
    eps = [
        ep(1, 3000),
        ep(2, 100, os_name="Windows 7 Enterprise", build=7601, display_version=None),
        ep(3, 1, os_name="Windows 11 Pro", build=22631, arch="mips"),
    ]
    result = scan(frames(eps, CHAIN))
    assert dict(zip(result.unmapped["endpoint_id"], result.unmapped["reason"], strict=True)) == {
        2: "no catalog rows for Windows 7 for x64-based Systems Service Pack 1",
        3: "unknown architecture 'mips'",
    }


def test_explain_gives_the_whole_reasoning_for_a_reported_patch() -> None:
    lines = explain(frames([ep(7, 4000)], CHAIN), 7, 3)
    assert lines[1] == f"MSRC product: {W11}"
    assert "KB5046633 is a candidate and not satisfied" in lines
    assert lines[-1].startswith("MISSING: build 22631.4000 < fixed 22631.4460")
    assert explain(frames([ep(7, 4000)], CHAIN), 8, 3) == ["endpoint 8 is not in this scan"]


@pytest.mark.parametrize("bad", ["ms_catalog", "endpoints"])
def test_a_frame_without_its_columns_is_refused(bad: str) -> None:
    f = frames([ep(1, 1)], CHAIN)
    setattr(f, bad, getattr(f, bad).drop(columns=getattr(f, bad).columns[1]))
    with pytest.raises(ValueError, match=bad):
        scan(f)


def test_supersedence_closure_follows_chains_per_product() -> None:
    """Every (older, newer) pair of a chain, however long, once; a product's chain never
    reaches into another's; a KB naming itself, and a cycle back to the start, add no pair of
    a KB with itself."""
    from applicability.microsoft import supersedence_closure

    rows = [("w11", "KB2", "KB1"), ("w11", "KB3", "KB2"), ("w11", "KB4", "KB3"),
            ("w11", "KB1", "KB4"),  # a cycle back to the first
            ("w11", "KB9", "KB9"), ("w11", "KB8", None),
            ("s22", "KB3", "KB2"),  # the same KBs, another product: its own chain
            ("s22", "KB5", "KB3"), ("s22", "KB5", "KB3")]
    c = pd.DataFrame(rows, columns=["pkey", "kb", "sup"], dtype="str")
    got = supersedence_closure(c)
    w11 = {f"KB{i}" for i in range(1, 5)}
    expected = {("w11", a, d) for a in w11 for d in w11 if a != d}
    expected |= {("s22", "KB2", "KB3"), ("s22", "KB2", "KB5"), ("s22", "KB3", "KB5")}
    assert list(got.columns) == ["pkey", "anc", "desc"]
    assert set(got.itertuples(index=False, name=None)) == expected
    assert len(got) == len(expected)  # each pair once
    assert supersedence_closure(c[c["sup"].isna()]).empty
