"""winget parser on the real winget-pkgs manifests in ../shared/fixtures/winget.

Expected values were read out of the YAML files by hand, not produced by the parser.
"""

from __future__ import annotations

import datetime as dt

import pytest

from sources.records import ARCHES, INSTALLER_TYPES, ParsedDocument, PatchRecord
from sources.versions import version_key
from sources.winget import DEFAULT_PACKAGES, find_package_dirs, parse_package_dir
from tests.support.paths import SHARED_FIXTURES

SHARED = SHARED_FIXTURES
WINGET = SHARED / "winget"

pytestmark = pytest.mark.skipif(
    not (WINGET / "manifests").is_dir(), reason=f"real winget manifests not available at {WINGET}"
)

EXPECTED_VERSIONS = {
    "7zip.7zip": ["19.00", "23.01", "26.03"],
    "Adobe.Acrobat.Reader.64-bit": ["21.007.20099", "24.002.20687", "26.002.21931"],
    "Adobe.Acrobat.Reader.32-bit": ["26.002.21931"],
    "Mozilla.Firefox": ["100.0", "140.0"],
    "Notepad++.Notepad++": ["7.9.5", "8.6.9", "8.9.8"],
    "Oracle.JavaRuntimeEnvironment": ["8.0.251", "8.0.2910.10", "8.0.4010.10", "8.0.5030.1"],
    "PuTTY.PuTTY": ["0.76.0.0", "0.81.0.0", "0.85.0.0"],
    "VideoLAN.VLC": ["3.0.10", "3.0.20", "3.0.24"],
}


@pytest.fixture(scope="module")
def packages() -> dict[str, ParsedDocument]:
    dirs = find_package_dirs(WINGET, list(DEFAULT_PACKAGES))
    return {package_id: parse_package_dir(folder) for package_id, folder in dirs.items()}


def _version(doc: ParsedDocument, version: str) -> PatchRecord:
    return next(p for p in doc.patches if p.version == version)


def test_every_fixture_manifest_parses(packages: dict[str, ParsedDocument]) -> None:
    # Thunderbird is a default package but has no manifests in the fixtures.
    assert set(packages) == set(DEFAULT_PACKAGES) - {"Mozilla.Thunderbird"}
    version_folders = sum(1 for f in (WINGET / "manifests").rglob("*.installer.yaml"))
    assert sum(len(d.patches) for d in packages.values()) == version_folders == 22
    for package_id, doc in packages.items():
        assert doc.key == package_id
        assert [p.version for p in doc.patches] == EXPECTED_VERSIONS[package_id]
        for patch in doc.patches:
            assert patch.installers, patch.key
            for installer in patch.installers:
                assert installer.type in INSTALLER_TYPES and installer.arch in ARCHES
                assert len(installer.sha256) == 64 and installer.sha256 == installer.sha256.lower()
    # Nothing is dropped anywhere; 7-Zip 26.03's 32-bit ARM build is kept as such.
    assert [e for d in packages.values() for e in d.errors] == []
    arches = {i.arch for p in packages["7zip.7zip"].patches if p.version == "26.03"
              for i in p.installers}
    assert "arm" in arches


def test_supersedence_follows_version_order(packages: dict[str, ParsedDocument]) -> None:
    java = packages["Oracle.JavaRuntimeEnvironment"]
    newest = java.patches[-1]
    assert newest.key == "Oracle.JavaRuntimeEnvironment@8.0.5030.1"
    assert newest.supersedes == tuple(
        f"Oracle.JavaRuntimeEnvironment@{v}" for v in ("8.0.251", "8.0.2910.10", "8.0.4010.10"))
    assert {p.superseded_by for p in java.patches[:-1]} == {newest.key}
    for doc in packages.values():
        keys = [version_key(p.version or "") for p in doc.patches]
        assert keys == sorted(keys)


def test_7zip_2301_installers(packages: dict[str, ParsedDocument]) -> None:
    patch = _version(packages["7zip.7zip"], "23.01")
    assert patch.title == "7-Zip 23.01"
    assert patch.vendor == "Igor Pavlov"
    by_url = {i.url: i for i in patch.installers}
    assert list(by_url) == [
        "https://www.7-zip.org/a/7z2301-x64.exe",
        "https://www.7-zip.org/a/7z2301.exe",
        "https://www.7-zip.org/a/7z2301-arm64.exe",
        "https://www.7-zip.org/a/7z2301.msi",
        "https://www.7-zip.org/a/7z2301-x64.msi",
    ]
    exe = by_url["https://www.7-zip.org/a/7z2301-x64.exe"]
    assert exe.sha256 == "26cb6e9f56333682122fafe79dbcdfd51e9f47cc7217dccd29ac6fc33b5598cd"
    assert (exe.type, exe.arch, exe.scope, exe.silent_switches) == ("exe", "x64", "machine", "/S")
    assert exe.apps_and_features == ({"DisplayName": "7-Zip 23.01 (x64)"},)
    msi = by_url["https://www.7-zip.org/a/7z2301-x64.msi"]
    assert msi.sha256 == "0ba639b6dacdf573d847c911bd147c6384381a54dac082b1e8c77bc73d58958b"
    assert (msi.type, msi.locale) == ("wix", "en-US")
    assert msi.product_code == "{23170F69-40C1-2702-2301-000001000000}"
    # The MSI build uses a different display name than the exe build (real quirk).
    assert msi.apps_and_features[0]["DisplayName"] == "7-Zip 23.01 (x64 edition)"
    assert _version(packages["7zip.7zip"], "19.00").release_date == dt.date(2019, 2, 22)


def test_putty_versions_and_swapped_names(packages: dict[str, ParsedDocument]) -> None:
    putty = packages["PuTTY.PuTTY"]
    assert [p.key for p in putty.patches] == [
        "PuTTY.PuTTY@0.76.0.0", "PuTTY.PuTTY@0.81.0.0", "PuTTY.PuTTY@0.85.0.0"]
    x86 = next(i for i in _version(putty, "0.81.0.0").installers if i.arch == "x86")
    # Published as is: 0.81's x86 MSI claims the 64-bit display name and UpgradeCode.
    assert x86.apps_and_features[0]["DisplayName"] == "PuTTY release 0.81 (64-bit)"
    assert x86.upgrade_code == "{C9EAA861-2B72-4FAF-9FEE-EEB1AD5FD15E}"
    assert x86.locale == "en-US"  # root-level InstallerLocale applies to every installer
    assert x86.url == "https://the.earth.li/~sgtatham/putty/0.81/w32/putty-0.81-installer.msi"


def test_vlc_3020_installers(packages: dict[str, ParsedDocument]) -> None:
    patch = _version(packages["VideoLAN.VLC"], "3.0.20")
    summary = [(i.type, i.arch, i.product_code) for i in patch.installers]
    assert summary == [
        ("wix", "x64", "{9675011C-2395-4AD7-B1CC-92910F991F58}"),
        ("wix", "x86", "{C4D381F1-1D4F-49CE-96C1-CEA8ED7844A1}"),
        ("nullsoft", "x64", None),
        ("nullsoft", "x86", None),
    ]
    msi = patch.installers[0]
    assert msi.url == "https://download.videolan.org/videolan/vlc/3.0.20/win64/vlc-3.0.20-win64.msi"
    assert msi.sha256 == "ce1fe655b7cd8e11a55dde25502f42e0bf0a9d3bc0556583b6a841fa37e88f02"
    assert msi.silent_switches == "/quiet"
    assert msi.scope == "machine"  # from the root
    # The MSI reports 3.0.20.0 for package 3.0.20; the scan compares them as equal.
    assert msi.apps_and_features[0]["DisplayVersion"] == "3.0.20.0"
    assert version_key("3.0.20.0") == version_key(patch.version or "")


def test_java_versions_switches_and_eula(packages: dict[str, ParsedDocument]) -> None:
    java = packages["Oracle.JavaRuntimeEnvironment"]
    latest = _version(java, "8.0.5030.1")
    assert latest.release_date == dt.date(2026, 8, 18)
    x64 = next(i for i in latest.installers if i.arch == "x64")
    assert x64.silent_switches == "/s REBOOT=0 SPONSORS=0 AUTO_UPDATE=0"  # Silent + Custom
    assert x64.product_code == "{77124AE4-039E-4CA4-87B4-2F64180503F0}"
    assert x64.upgrade_code == "{57BDA5C6-443C-4D65-B233-282396418000}"
    assert x64.apps_and_features[0]["DisplayName"] == "Java 8 Update 503 (64-bit)"
    for patch in java.patches:  # License: Proprietary
        assert patch.eula_required
        assert patch.eula_url == "https://www.oracle.com/downloads/licenses/javase-license1.html"
    (old,) = _version(java, "8.0.251").installers
    assert old.silent_switches == "/s" and old.scope is None


def test_adobe_reader_eula(packages: dict[str, ParsedDocument]) -> None:
    reader = packages["Adobe.Acrobat.Reader.64-bit"]
    assert all(p.eula_required for p in reader.patches)
    assert _version(reader, "21.007.20099").eula_url == (
        "https://www.adobe.com/content/dam/cc/en/legal/licenses-terms/pdf/"
        "Reader-EULA-en_US-20181207.pdf")
    (installer,) = _version(reader, "26.002.21931").installers
    assert installer.product_code == "{AC76BA86-1033-FF00-7760-BC15014EA700}"  # root level
    assert installer.silent_switches == "-sfx_nu /sAll /rs /msi"
    assert not any(p.eula_required for p in packages["Mozilla.Firefox"].patches)  # MPL
    assert not any(p.eula_required for p in packages["7zip.7zip"].patches)  # LGPL


def test_firefox_locale_installers_and_filter(packages: dict[str, ParsedDocument]) -> None:
    old = _version(packages["Mozilla.Firefox"], "100.0")
    assert len(old.installers) == 52
    assert len(old.languages) == 10 and "de-DE" in old.languages
    folder = find_package_dirs(WINGET, ["mozilla.firefox"])["mozilla.firefox"]
    filtered = parse_package_dir(folder, {"de-DE"})
    old_de = _version(filtered, "100.0")
    assert old_de.languages == ("de-DE",)
    assert sorted((i.locale or "-", i.arch, i.type) for i in old_de.installers) == [
        ("-", "x64", "msix"), ("-", "x86", "msix"),  # multi-language MSIX stays
        ("de-DE", "arm64", "exe"), ("de-DE", "x64", "exe"), ("de-DE", "x64", "wix"),
        ("de-DE", "x86", "exe"), ("de-DE", "x86", "wix"),
    ]
    new = _version(filtered, "140.0")  # locale-neutral installers only: unaffected
    assert [(i.arch, i.type) for i in new.installers] == [
        ("x86", "nullsoft"), ("x64", "nullsoft"), ("arm64", "nullsoft")]
    assert new.installers[0].product_code == "Mozilla Firefox 140.0 (x86 en-US)"
    # Two different ProductCodes among the entries (browser, maintenance service): no guess.
    x86_msi = next(i for i in old.installers
                   if (i.locale, i.arch, i.type) == ("en-US", "x86", "wix"))
    assert x86_msi.product_code is None
    assert len(x86_msi.apps_and_features) == 2


def test_english_only_versions_survive_a_german_filter() -> None:
    folder = find_package_dirs(WINGET, ["PuTTY.PuTTY"])["PuTTY.PuTTY"]
    patch = _version(parse_package_dir(folder, {"de-DE"}), "0.81.0.0")
    assert [i.locale for i in patch.installers] == ["en-US"] * 3
