"""Version ordering on the strings vendors actually publish (winget and uninstall registry)."""

from __future__ import annotations

import pytest

from sources.versions import compare_versions, version_key


@pytest.mark.parametrize(
    ("newer", "older"),
    [
        ("23.01", "19.00"),  # 7-Zip
        ("26.03", "23.01"),
        ("0.85.0.0", "0.81.0.0"),  # PuTTY (winget)
        ("0.81", "0.76"),  # PuTTY (its own display version)
        ("3.0.24", "3.0.20"),  # VLC
        ("3.0.20.0", "3.0.10"),  # VLC MSI DisplayVersion vs package version
        ("8.0.4010.10", "8.0.2910.10"),  # Java 8u401 vs 8u291
        ("8.0.5030.1", "8.0.4010.10"),
        ("8.0.2910.10", "8.0.251"),  # numeric segments, not text: 2910 > 251
        ("26.002.21931", "24.002.20687"),  # Adobe Reader
        ("24.002.20687", "21.007.20099"),
        ("8.9.8", "8.6.9"),  # Notepad++
        ("8.6.9", "7.9.5"),
        ("140.0", "100.0"),  # Firefox: 140 > 100, although "1" sorts the same
        ("1.10", "1.9"),  # not a decimal fraction
        ("10.0.22631.3007", "10.0.22621.3007"),  # Windows builds
    ],
)
def test_newer_compares_greater(newer: str, older: str) -> None:
    assert compare_versions(newer, older) == 1
    assert compare_versions(older, newer) == -1
    assert version_key(newer) > version_key(older)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("0.81", "0.81.0.0"),
        ("3.0.20", "3.0.20.0"),
        ("23.01", "23.1"),
        ("26.002.21931", "26.2.21931"),
        ("1", "1.0.0"),
        ("v7.9.5", "7.9.5"),
        ("1.2.3", "1-2-3"),
    ],
)
def test_equal_spellings(a: str, b: str) -> None:
    assert compare_versions(a, b) == 0
    assert version_key(a) == version_key(b)


def test_text_segments_are_deterministic_pre_releases() -> None:
    assert compare_versions("1.0rc1", "1.0") == -1
    assert compare_versions("1.0-beta", "1.0-rc1") == -1  # alphabetical between markers
    assert compare_versions("1.0.1", "1.0rc1") == 1
    assert compare_versions("2.0-RC1", "2.0-rc1") == 0
    ordered = sorted(["1.0", "1.0.1", "1.0rc1", "0.9", "1.0beta"], key=version_key)
    assert ordered == ["0.9", "1.0beta", "1.0rc1", "1.0", "1.0.1"]


def test_odd_input_does_not_raise() -> None:
    assert compare_versions("", "0") == 0
    assert compare_versions("unknown", "1.0") == -1
    assert isinstance(version_key("Java 8 Update 401"), tuple)
