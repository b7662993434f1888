"""winget manifest parser on the project's own miniature winget-pkgs tree."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from sources.records import ParsedDocument, SourceError
from sources.winget import (
    DEFAULT_PACKAGES,
    find_package_dirs,
    link_versions,
    parse_manifest_files,
    parse_package_dir,
)
from tests.support.paths import FIXTURES

ROOT = FIXTURES / "sources" / "winget"
TOOL = ROOT / "manifests" / "e" / "Example" / "Tool"


@pytest.fixture(scope="module")
def tool() -> ParsedDocument:
    return parse_package_dir(TOOL)


def _files(folder: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in folder.iterdir()}


def test_find_package_dirs_layout_case_and_nesting() -> None:
    ids = ["example.tool", "Example.Tool.Portable", "Example.Broken", "Example.Missing", "Example"]
    found = find_package_dirs(ROOT, ids)
    assert found == {
        "example.tool": TOOL,
        "Example.Tool.Portable": TOOL / "Portable",
        "Example.Broken": TOOL.parent / "Broken",
    }
    # Pointing at manifests/ itself works the same.
    assert find_package_dirs(ROOT / "manifests", ["Example.Tool"]) == {"Example.Tool": TOOL}


def test_versions_sorted_numerically_and_linked(tool: ParsedDocument) -> None:
    assert tool.key == "Example.Tool"
    # 1.10 is newer than 1.2.0; the nested Portable sub-package is not a version of Tool.
    assert [p.version for p in tool.patches] == ["1.0", "1.2.0", "1.10"]
    newest = tool.patches[-1]
    assert newest.key == "Example.Tool@1.10"
    assert newest.supersedes == ("Example.Tool@1.0", "Example.Tool@1.2.0")
    assert newest.superseded_by is None
    assert all(p.superseded_by == newest.key for p in tool.patches[:-1])
    assert tool.release_date == dt.date(2025, 1, 15)  # the newest version's, datetime accepted


def test_common_fields(tool: ParsedDocument) -> None:
    for patch in tool.patches:
        assert (patch.source, patch.category, patch.severity, patch.restart_required) == (
            "winget", "Applications", "Unspecified", "May Require")
        assert patch.package_id == "Example.Tool"
        assert patch.vendor == "Example Corp"
        assert patch.title == f"Example Tool {patch.version}"


def test_singleton_schema_1_0(tool: ParsedDocument) -> None:
    patch = tool.patches[0]
    (installer,) = patch.installers
    assert (installer.type, installer.arch, installer.product_code) == (
        "msi", "x64", "{11111111-1111-1111-1111-111111111111}")
    assert installer.sha256 == "a" * 64
    assert patch.eula_required is False  # MIT


def test_root_fields_overrides_and_bad_entries(tool: ParsedDocument) -> None:
    patch = tool.patches[1]
    assert patch.release_date == dt.date(2024, 3, 1)
    assert patch.info_url == "https://example.com/tool/1.2.0/notes"  # ReleaseNotesUrl first
    assert (patch.eula_required, patch.eula_url) == (True, "https://example.com/tool/eula")
    assert patch.languages == ("de-DE", "en-US")
    x64, en, de = patch.installers
    # Installer-level Scope and Silent override the root; root Custom is appended.
    assert (x64.type, x64.scope, x64.silent_switches) == ("exe", "user", "/VERYSILENT /NORESTART")
    assert (en.type, en.scope, en.locale, en.silent_switches) == (
        "inno", "machine", "en-US", "/S /NORESTART")
    assert en.sha256 == "c" * 64
    # UpgradeCode only in AppsAndFeaturesEntries is lifted to the installer.
    assert en.upgrade_code == "{22222222-2222-2222-2222-222222222222}"
    assert en.apps_and_features == ({
        "DisplayName": "Example Tool (x86 en-US)",
        "DisplayVersion": "1.2.0.0",
        "UpgradeCode": "{22222222-2222-2222-2222-222222222222}",
    },)
    assert len(de.apps_and_features) == 2
    assert tool.errors == [
        "Example.Tool@1.2.0: installer #4 skipped: InstallerSha256 is not 64 hex characters: 1234",
        "Example.Tool@1.2.0: installer #5 skipped: entry is a str, not a mapping",
        "Example.Tool@1.2.0: installer #6 skipped: InstallerSwitches is not a mapping: /S",
    ]


def test_unquoted_version_keeps_its_text(tool: ParsedDocument) -> None:
    # YAML reads `PackageVersion: 1.10` as the float 1.1; the record must say 1.10.
    patch = tool.patches[2]
    assert patch.version == "1.10"
    (installer,) = patch.installers
    assert (installer.type, installer.arch) == ("zip", "neutral")
    assert installer.product_code == "{33333333-3333-3333-3333-333333333333}"
    assert patch.eula_required is False  # GPL with a plain licence URL


@pytest.mark.parametrize(
    ("languages", "expected"),
    [
        ({"de-DE"}, [None, "de-DE"]),
        ({"DE"}, [None, "de-DE"]),  # language-only and case-insensitive
        ({"fr-FR"}, [None]),  # the locale-neutral installer remains
        (None, [None, "en-US", "de-DE"]),
    ],
)
def test_language_filter(languages: set[str] | None, expected: list[str | None]) -> None:
    patch = parse_package_dir(TOOL, languages).patches[1]
    assert [i.locale for i in patch.installers] == expected
    assert patch.languages == tuple(sorted(x for x in expected if x))


def test_language_filter_keeps_a_version_that_only_exists_in_other_locales() -> None:
    files = _files(TOOL / "1.2.0")
    text = files["Example.Tool.installer.yaml"].decode()
    # Drop the locale-neutral x64 installer: only en-US and de-DE builds remain.
    text = text.replace("  - Architecture: x64\n    Scope: user", "  - Architecture: x64\n"
                        "    InstallerLocale: en-GB\n    Scope: user")
    files["Example.Tool.installer.yaml"] = text.encode()
    patch = parse_manifest_files(files, {"fr-FR"}).patches[0]
    assert sorted(i.locale or "" for i in patch.installers) == ["de-DE", "en-GB", "en-US"]


def test_broken_versions_are_reported_not_fatal() -> None:
    doc = parse_package_dir(TOOL.parent / "Broken")
    assert [p.key for p in doc.patches] == ["Example.Broken@2.0.0"]
    patch = doc.patches[0]
    assert patch.title == "Example.Broken 2.0.0"  # defaultLocale unreadable: fall back to the id
    assert doc.errors[0] == "Example.Broken@1.0.0: Installers is not a list"
    assert doc.errors[1].startswith(
        "Example.Broken@2.0.0: Example.Broken.locale.en-US.yaml: invalid YAML: ")
    assert all("\n" not in e for e in doc.errors)


def test_package_without_usable_version_raises() -> None:
    with pytest.raises(SourceError, match=r"^Empty: no usable version .*no installer manifest"):
        parse_package_dir(TOOL.parent / "Empty")


@pytest.mark.parametrize(
    ("installer_yaml", "reason"),
    [
        (b"Installers: {a: 1}\nPackageIdentifier: X.Y\nPackageVersion: '1'\n"
         b"ManifestType: installer\n", "Installers is not a list"),
        (b"PackageIdentifier: X.Y\nPackageVersion: '1'\nManifestType: installer\nInstallers:\n"
         b"- {Architecture: x64, InstallerType: exe, InstallerUrl: 'ftp://x/y.exe',"
         b" InstallerSha256: " + b"A" * 64 + b"}\n", "InstallerUrl is not an http"),
        (b"PackageIdentifier: X.Y\nPackageVersion: '1'\nManifestType: installer\nInstallers:\n"
         b"- {Architecture: x64, InstallerType: pwa, InstallerUrl: 'https://x/y',"
         b" InstallerSha256: " + b"A" * 64 + b"}\n", "unsupported InstallerType: pwa"),
        (b"PackageIdentifier: X.Y\nPackageVersion: '1'\nManifestType: installer\nInstallers:\n"
         b"- {Architecture: [x64], InstallerType: exe, InstallerUrl: 'https://x/y',"
         b" InstallerSha256: " + b"A" * 63 + b"G}\n", "InstallerSha256 is not 64 hex"),
        (b"PackageIdentifier: X.Y\nManifestType: installer\nInstallers: []\n",
         "no PackageVersion"),
        (b"ManifestType: installer\nInstallers: [\n", "no installer manifest .*invalid YAML"),
        (b"- just\n- a list\n", "no installer manifest .*not a winget manifest"),
    ],
)
def test_unusable_version_raises_one_line(installer_yaml: bytes, reason: str) -> None:
    with pytest.raises(SourceError, match=reason) as err:
        parse_manifest_files({"X.Y.installer.yaml": installer_yaml})
    assert "\n" not in str(err.value)


def test_yaml_is_loaded_safely() -> None:
    hostile = (b"PackageIdentifier: !!python/object/apply:os.system ['echo pwned']\n"
               b"ManifestType: installer\nInstallers: []\n")
    with pytest.raises(SourceError, match="invalid YAML"):
        parse_manifest_files({"X.Y.installer.yaml": hostile})


def test_content_hash_covers_names_and_bytes(tmp_path: Path) -> None:
    first = parse_manifest_files(_files(TOOL / "1.10"))
    again = parse_manifest_files(_files(TOOL / "1.10"))
    assert first.content_hash == again.content_hash
    renamed = {f"renamed-{k}": v for k, v in _files(TOOL / "1.10").items()}
    assert parse_manifest_files(renamed).content_hash != first.content_hash
    package = parse_package_dir(TOOL)
    assert package.content_hash != first.content_hash


def test_link_versions_is_reusable_for_online_fetches() -> None:
    patches = [parse_manifest_files(_files(TOOL / v)).patches[0] for v in ("1.10", "1.0")]
    linked = link_versions(patches)
    assert [p.version for p in linked] == ["1.0", "1.10"]
    assert linked[0].superseded_by == "Example.Tool@1.10"
    assert link_versions(patches[:1]) == patches[:1]


def test_default_packages_are_winget_ids() -> None:
    assert "7zip.7zip" in DEFAULT_PACKAGES
    assert "Mozilla.Thunderbird" in DEFAULT_PACKAGES
    assert len(set(DEFAULT_PACKAGES)) == len(DEFAULT_PACKAGES) == 9
