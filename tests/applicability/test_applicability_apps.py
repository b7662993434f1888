"""Third-party rules of the scan engine on small hand-checked frames.

Display names, codes and versions are copied from the real winget manifests (7-Zip, PuTTY, VLC,
Java 8, Firefox, Adobe Reader) so the quirks they carry are what the tests exercise.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from applicability import ScanFrames, build_frames, explain, scan
from applicability.reference import scan_reference

Z_X64_23 = "{23170F69-40C1-2702-2301-000001000000}"
Z_X86_23 = "{23170F69-40C1-2701-2301-000001000000}"
Z_UP_X64 = "{23170F69-40C1-2702-0000-000004000000}"
PUTTY_UP_A = "{C9EAA861-2B72-4FAF-9FEE-EEB1AD5FD15E}"  # x86 in 0.81's manifest, x64 in 0.85's
PUTTY_UP_B = "{DCE70C63-8808-4646-B16B-A677BD298385}"


def app(
    pid: int,
    package: str,
    version: str,
    arch: str,
    name: str,
    publisher: str,
    pcs: tuple = (),
    ucs: tuple = (),
    dns: tuple = (),
) -> dict[str, Any]:
    return {
        "patch_id": pid,
        "package_id": package,
        "package_name": name,
        "publisher": publisher,
        "version": version,
        "arch": arch,
        "product_codes": list(pcs),
        "upgrade_codes": list(ucs),
        "display_names": list(dns),
    }


CATALOG = [
    app(
        10,
        "7zip.7zip",
        "23.01",
        "x64",
        "7-Zip",
        "Igor Pavlov",
        (Z_X64_23,),
        (Z_UP_X64,),
        ("7-Zip 23.01 (x64 edition)", "7-Zip 23.01 (x64)"),
    ),
    app(10, "7zip.7zip", "23.01", "x86", "7-Zip", "Igor Pavlov", (Z_X86_23,), (), ("7-Zip 23.01",)),
    app(11, "7zip.7zip", "26.03", "x64", "7-Zip", "Igor Pavlov", ("7-Zip",), (Z_UP_X64,)),
    app(
        20,
        "PuTTY.PuTTY",
        "0.81.0.0",
        "x86",
        "PuTTY",
        "Simon Tatham",
        (),
        (PUTTY_UP_A,),
        ("PuTTY release 0.81 (64-bit)",),
    ),
    app(
        20,
        "PuTTY.PuTTY",
        "0.81.0.0",
        "x64",
        "PuTTY",
        "Simon Tatham",
        (),
        (PUTTY_UP_B,),
        ("PuTTY release 0.81",),
    ),
    app(21, "PuTTY.PuTTY", "0.85.0.0", "x64", "PuTTY", "Simon Tatham", (), (PUTTY_UP_A,)),
    app(21, "PuTTY.PuTTY", "0.85.0.0", "x86", "PuTTY", "Simon Tatham", (), (PUTTY_UP_B,)),
    app(
        30,
        "VideoLAN.VLC",
        "3.0.20",
        "x64",
        "VLC media player",
        "VideoLAN",
        ("{9675011C-2395-4AD7-B1CC-92910F991F58}",),
        (),
        ("VLC media player",),
    ),
    app(
        40,
        "Oracle.JavaRuntimeEnvironment",
        "8.0.4010.10",
        "x64",
        "Java 8",
        "Oracle Corporation",
        (),
        (),
        ("Java 8 Update 381 (64-bit)",),
    ),
    app(
        41,
        "Oracle.JavaRuntimeEnvironment",
        "8.0.5030.1",
        "x64",
        "Java 8",
        "Oracle Corporation",
        (),
        (),
        ("Java 8 Update 503 (64-bit)",),
    ),
    app(
        50,
        "Mozilla.Firefox",
        "140.0",
        "x64",
        "Mozilla Firefox (en-US)",
        "Mozilla",
        ("Mozilla Firefox 140.0 (x64 en-US)",),
    ),
    app(51, "Mozilla.Firefox", "156.0.1", "x64", "Mozilla Firefox", "Mozilla"),
    app(
        60,
        "Adobe.Acrobat.Reader.64-bit",
        "26.002.21931",
        "x64",
        "Adobe Acrobat Reader (64-bit)",
        "Adobe",
    ),
    app(
        61,
        "Adobe.Acrobat.Reader.32-bit",
        "26.002.21931",
        "x86",
        "Adobe Acrobat Reader (32-bit)",
        "Adobe Systems Incorporated",
    ),
    app(70, "Notepad++.Notepad++", "8.9.8", "x64", "Notepad++", "Notepad++ Team"),
    app(70, "Notepad++.Notepad++", "8.9.8", "x86", "Notepad++", "Notepad++ Team"),
    app(71, "Notepad++.Notepad++", "8.9.9", "x64", "Notepad++", "Notepad++ Team"),
]


def prog(
    eid: int,
    name: str,
    version: str | None,
    publisher: str | None = None,
    arch: str | None = None,
    pc: str | None = None,
    uc: str | None = None,
) -> dict[str, Any]:
    return {
        "endpoint_id": eid,
        "name": name,
        "version": version,
        "publisher": publisher,
        "product_code": pc,
        "upgrade_code": uc,
        "arch": arch,
    }


def frames(programs: list[dict], available: list[int] | None = None) -> ScanFrames:
    eids = sorted({p["endpoint_id"] for p in programs})
    patch_ids = sorted({c["patch_id"] for c in CATALOG}) if available is None else available
    return build_frames(
        endpoints=[
            {
                "endpoint_id": e,
                "hostname": f"pc{e}",
                "os_name": "Windows 11 Pro",
                "build": 22631,
                "ubr": 4460,
                "arch": "x64",
            }
            for e in eids
        ],
        programs=programs,
        app_catalog=CATALOG,
        availability=[{"endpoint_id": e, "server_id": 1} for e in eids],
        server_patches=[{"server_id": 1, "patch_id": p} for p in patch_ids],
    )


def check(f: ScanFrames) -> tuple[dict[tuple[int, int], tuple[str, str]], pd.DataFrame]:
    """(endpoint, patch) -> (installed_version, reason), and the ambiguous frame; the
    reference loop must agree."""
    result = scan(f)
    ref_missing, ref_amb, _ = scan_reference(f)
    pd.testing.assert_frame_equal(result.missing, ref_missing)
    pd.testing.assert_frame_equal(result.ambiguous, ref_amb)
    got = {
        (r.endpoint_id, r.patch_id): (r.installed_version, r.reason)
        for r in result.missing.itertuples()
    }
    return got, result.ambiguous


def test_x86_and_x64_installs_are_compared_with_their_own_architecture() -> None:
    # 26.03 exists for x64 only: the x86 23.01 is current, the x64 one is not.
    got, amb = check(
        frames(
            [
                prog(1, "7-Zip 23.01", "23.01", "Igor Pavlov", "x86"),
                prog(2, "7-Zip 23.01 (x64)", "23.01", "Igor Pavlov"),
            ]
        )
    )
    assert got == {(2, 11): ("23.01", "7-Zip 23.01 (x64) < 26.03")}
    assert amb.empty


def test_a_program_installed_twice_is_judged_on_its_highest_version() -> None:
    got, _ = check(
        frames(
            [
                prog(1, "7-Zip 19.00 (x64 edition)", "19.00", "Igor Pavlov", "x64"),
                prog(1, "7-Zip 26.03 (x64)", "26.03", "Igor Pavlov", "x64"),
                prog(2, "7-Zip 19.00 (x64 edition)", "19.00", "Igor Pavlov", "x64"),
                prog(2, "7-Zip 23.01 (x64)", "23.01", "Igor Pavlov", "x64"),
            ]
        )
    )
    assert got == {(2, 11): ("23.01", "7-Zip 23.01 (x64) < 26.03 (also installed: 19.00)")}


def test_two_architectures_lacking_the_same_patch_give_one_row() -> None:
    got, _ = check(
        frames(
            [
                prog(1, "Notepad++ (32-bit x86)", "8.6.9", "Notepad++ Team"),
                prog(1, "Notepad++ (64-bit x64)", "8.6.9", "Notepad++ Team"),
            ],
            available=[70],
        )
    )
    assert got == {
        (1, 70): ("8.6.9", "Notepad++ 8.6.9 (x64) < 8.9.8; Notepad++ 8.6.9 (x86) < 8.9.8")
    }


def test_product_code_beats_the_display_name() -> None:
    # Named like Firefox, but its ProductCode is 7-Zip's x64 MSI: it is 7-Zip.
    got, _ = check(frames([prog(1, "Mozilla Firefox", "23.01", "Mozilla", pc=Z_X64_23.lower())]))
    assert got == {(1, 11): ("23.01", "Mozilla Firefox 23.01 (x64) < 26.03")}
    lines = explain(frames([prog(1, "Mozilla Firefox", "23.01", pc=Z_X64_23)]), 1, 11)
    assert any("matches 7zip.7zip by ProductCode, arch x64 (from code)" in ln for ln in lines)


def test_a_name_two_packages_share_is_reported_as_ambiguous() -> None:
    got, amb = check(
        frames(
            [
                prog(1, "Adobe Acrobat Reader", "24.002.20687", "Adobe"),
                prog(2, "Adobe Acrobat Reader (64-bit)", "24.002.20687", "Adobe"),
            ]
        )
    )
    assert got == {
        (2, 60): ("24.002.20687", "Adobe Acrobat Reader 24.002.20687 (x64) < 26.002.21931")
    }
    assert amb.to_dict("records") == [
        {
            "endpoint_id": 1,
            "program": "Adobe Acrobat Reader",
            "package_ids": "Adobe.Acrobat.Reader.32-bit, Adobe.Acrobat.Reader.64-bit",
            "reason": "matches several packages by name",
        }
    ]


def test_unknown_architecture_is_ambiguous_only_when_it_matters() -> None:
    got, amb = check(
        frames(
            [
                # Newest is 0.85.0.0 on both arches: no guess needed (PuTTY 0.81's swapped codes).
                prog(1, "PuTTY release 0.76", "0.76.0.0", "Simon Tatham", uc=PUTTY_UP_A),
                # Newest differs (x64 8.9.9, x86 8.9.8): reported as ambiguous, not guessed.
                prog(2, "Notepad++", "8.6.9", "Notepad++ Team"),
                prog(3, "Notepad++", None, "Notepad++ Team", "x64"),
            ]
        )
    )
    assert got == {(1, 21): ("0.76.0.0", "PuTTY 0.76.0.0 (arch unknown) < 0.85.0.0")}
    assert sorted(amb["reason"]) == [
        "architecture unknown and the newest version differs by architecture",
        "installed version unknown (no DisplayVersion)",
    ]


def test_swapped_upgrade_code_follows_the_inventory_architecture() -> None:
    got, _ = check(
        frames(
            [
                prog(
                    1,
                    "PuTTY release 0.81 (64-bit)",
                    "0.81.0.0",
                    "Simon Tatham",
                    "x64",
                    uc=PUTTY_UP_A,
                ),
                prog(2, "PuTTY release 0.81", "0.81", "Simon Tatham", "x86", uc=PUTTY_UP_B),
            ]
        )
    )
    assert got == {
        (1, 21): ("0.81.0.0", "PuTTY 0.81.0.0 (x64) < 0.85.0.0"),
        (2, 21): ("0.81", "PuTTY 0.81 (x86) < 0.85.0.0"),
    }


def test_vendor_version_spellings() -> None:
    got, _ = check(
        frames(
            [
                prog(1, "VLC media player", "3.0.20.0", "VideoLAN", "x64"),  # == 3.0.20
                prog(2, "Java 8 Update 381 (64-bit)", "8.0.4010.10", "Oracle Corporation"),
                prog(3, "Mozilla Firefox (x64 en-US)", "140.0", "Mozilla"),
                prog(
                    4,
                    "Mozilla Firefox 140.0 (x64 en-US)",
                    "140.0",
                    None,
                    pc="Mozilla Firefox 140.0 (x64 en-US)",
                ),
            ]
        )
    )
    assert got == {
        (2, 41): ("8.0.4010.10", "Java 8 8.0.4010.10 (x64) < 8.0.5030.1"),
        (3, 51): ("140.0", "Mozilla Firefox 140.0 (x64) < 156.0.1"),
        (4, 51): ("140.0", "Mozilla Firefox 140.0 (x64) < 156.0.1"),
    }


def test_only_versions_available_on_the_server_count() -> None:
    got, _ = check(frames([prog(1, "7-Zip 23.01 (x64)", "23.01", "Igor Pavlov")], available=[10]))
    assert got == {}
    got, _ = check(
        frames([prog(1, "Mozilla Firefox (x64 en-US)", "100.0", "Mozilla")], available=[50])
    )
    assert got == {(1, 50): ("100.0", "Mozilla Firefox 100.0 (x64) < 140.0")}


def test_publisher_must_agree_for_a_name_match() -> None:
    got, amb = check(
        frames(
            [
                prog(1, "7-Zip 23.01 (x64)", "23.01", "Some Repackager GmbH"),
                prog(
                    2, "Java 8 Update 381 (64-bit)", "8.0.4010.10", "Oracle"
                ),  # "Oracle Corporation"
                prog(3, "Java Auto Updater", "2.8.291.10", "Oracle Corporation"),  # another product
            ]
        )
    )
    assert set(got) == {(2, 41)}
    assert amb.empty
