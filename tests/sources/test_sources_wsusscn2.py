"""Microsoft's offline catalog (wsusscn2.cab): layout, fragments, mapping to catalog fields, and
refusal of damaged catalogs. The project's own fixture (tests/fixtures/wsusscn2) covers every
classification; the shared one (partly synthetic, from vuls-data-update) checks the real layout."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from sources import wsusscn2
from sources.records import PatchRecord, SourceError
from sources.wsus_metadata import CLASSIFICATIONS
from tests.conftest import shared_fixtures
from tests.support.cabfile import pack_catalog, write_cab
from tests.support.paths import FIXTURES

FIXTURE = FIXTURES / "wsusscn2"
needs_cabextract = pytest.mark.skipif(shutil.which("cabextract") is None,
                                      reason="cabextract is not installed (make test installs it)")


def _read(path: Path, workdir: Path | None = None) -> dict[str, PatchRecord]:
    with wsusscn2.open_catalog(path, workdir) as layout:
        return {r.key: r for r in wsusscn2.read_catalog(layout)}


def _copy(tmp_path: Path, source: Path = FIXTURE) -> Path:
    target = tmp_path / "catalog"
    shutil.copytree(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def test_own_fixture_maps_every_category_and_field() -> None:
    records = _read(FIXTURE)
    assert len(records) == 11  # 12 software bundles, two of them one KB; no category/detectoid
    assert {r.category for r in records.values()} == {
        "Security Updates", "Critical Updates", "Update Rollups", "Service Packs",
        "Feature Packs", "Updates", "Definition Updates", "Tools", "Drivers", "Upgrades"}
    assert all(r.source == "wsus" and r.vendor == "Microsoft" for r in records.values())

    cu = records["KB5034123"]  # x64 Windows 11 and Windows Server 2022 updates: one patch
    assert cu.kb == "KB5034123" and cu.severity == "Critical"
    assert cu.title.startswith("2024-01 Cumulative Update for Windows 11")
    assert [(p.name, p.severity, p.restart_required, p.supersedes) for p in cu.products] == [
        ("Windows 11", "Critical", "Required", "KB5033375"),
        ("Windows Server 2022", "Important", "May Require", None)]
    assert cu.restart_required == "Required"  # from the bundled update's AlwaysRequiresReboot
    assert cu.cves == ("CVE-2024-20653", "CVE-2024-20674")
    assert cu.supersedes == ("KB5033375",)
    assert str(cu.release_date) == "2024-01-09"
    (msu,) = cu.installers
    assert msu.type == "msu" and msu.arch == "x64" and msu.locale is None
    assert msu.sha256 == "6c265c4a43fb0b2db23206375fb9258bf2d5e1ecac8079bbab5a87a65dd5e84a"
    assert msu.url.endswith("/windows11.0-kb5034123-x64_7a1b.msu")
    assert msu.silent_switches == "/quiet /norestart"

    # Supersedence stated only by package.xml's SupersededBy is resolved too.
    assert records["KB5033375"].restart_required == "Required"
    assert records["KB890830"].eula_required is True
    assert records["KB890830"].restart_required == "Not Required"  # NeverReboots
    assert records["KB890830"].category == "Update Rollups"
    assert [p.name for p in records["KB890830"].products] == ["Windows 11",
                                                              "Windows Server 2022"]
    assert records["KB5011048"].restart_required == "May Require"  # CanRequestReboot
    assert records["KB2267602"].category == "Definition Updates"
    assert records["KB2267602"].products[0].name == "Microsoft Defender Antivirus"
    update = records["KB5034467"]
    assert update.languages == ("de", "en")
    assert {(i.locale, i.type) for i in update.installers} == {("en", "cab"), ("de", "cab")}
    assert all(r.severity == "Unspecified" for k, r in records.items()
               if k not in ("KB5034123", "KB5033375"))
    # Updates without a KB (tools, drivers, upgrades, a service pack) keep their UpdateId.
    no_kb = {r.category: r for r in records.values() if r.kb is None}
    assert set(no_kb) == {"Service Packs", "Tools", "Drivers", "Upgrades"}
    assert all(re.fullmatch(r"wsus:[0-9a-f-]{36}", r.key) for r in no_kb.values())
    assert no_kb["Drivers"].products[0].name.endswith("Servicing Drivers")


def test_classification_table_names_only_product_categories() -> None:
    from models.enums import Category

    assert set(CLASSIFICATIONS.values()) <= {c.value for c in Category}
    assert CLASSIFICATIONS["0fa1201d-4330-4fa8-8ae9-b877473b6441"] == "Security Updates"
    assert CLASSIFICATIONS["e6cf1350-c01b-414d-a61f-263d14d133b4"] == "Critical Updates"


@needs_cabextract
def test_the_cabinet_reads_like_its_extracted_folder(tmp_path: Path) -> None:
    cab = pack_catalog(FIXTURE, tmp_path / "wsusscn2.cab")
    assert wsusscn2.is_catalog(cab) and wsusscn2.is_catalog(FIXTURE)
    work = tmp_path / "work"
    assert _read(cab, work) == _read(FIXTURE)
    assert list(work.iterdir()) == []  # the extraction is removed afterwards
    # A folder that still holds the inner cabinets works too.
    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(FIXTURE / "index.xml", half / "index.xml")
    shutil.copytree(FIXTURE / "package", half / "package")
    for name in ("package2", "package3"):
        members = {f.relative_to(FIXTURE / name).as_posix(): f.read_bytes()
                   for f in (FIXTURE / name).rglob("*") if f.is_file()}
        write_cab(half / f"{name}.cab", members)
    assert _read(half, work) == _read(FIXTURE)


def test_documents_split_stably_into_buckets() -> None:
    records = list(_read(FIXTURE).values())
    docs = wsusscn2.documents(records)
    assert sorted(k for d in docs for k in (p.key for p in d.patches)) == sorted(
        r.key for r in records)
    assert all(d.key.startswith("wsusscn2/") for d in docs)
    again = wsusscn2.documents(list(reversed(records)))
    assert [(d.key, d.content_hash) for d in docs] == [(d.key, d.content_hash) for d in again]


def test_shared_fixture_layout(tmp_path: Path) -> None:
    shared = shared_fixtures("wsusscn2", "extracted")
    # As published, update 456789 has no fragments at all: the catalog is incomplete.
    with pytest.raises(SourceError, match=r"incomplete: fragment package3/c/456789 of update "
                                          r"913aa7a4-75d8-4abc-9d66-8ddc163be471 is missing"):
        _read(shared)
    copy = _copy(tmp_path, shared)
    package = copy / "package" / "package.xml"
    package.write_text(re.sub(r'<Update CreationDate="2023-04-06.*?</Update>', "",
                              package.read_text(), flags=re.S))
    records = _read(copy)
    assert sorted(records) == ["KB654321", "KB765432", "KB876543"]  # KBArticleID wins
    rollup = records["KB765432"]
    assert rollup.title == ("2020-09 Security Monthly Quality Rollup for Windows Server 2012 R2 "
                            "for x64-based Systems (KB4577066)")
    assert rollup.severity == "Important" and rollup.category == "Security Updates"
    # 234567 supersedes 123456 by UpdateId (core) and is superseded by 345678 (package.xml).
    assert rollup.supersedes == ("KB654321",)
    assert records["KB876543"].supersedes == ("KB765432",)
    # No category updates in this sample: products are named by their GUID.
    assert rollup.products[0].name == "Product d31bd4c3-d872-41c9-a2e7-231f372588cb"


@needs_cabextract
def test_shared_cabinet_is_refused_as_incomplete(tmp_path: Path) -> None:
    cab = shared_fixtures("wsusscn2", "wsusscn2.cab")
    with pytest.raises(SourceError, match="package3/c/456789"):
        _read(cab, tmp_path)


@pytest.mark.parametrize("fragment", ["package2/x/101", "package2/l/en/102", "package3/c/301",
                                      "package2/x/151"])
def test_a_missing_fragment_is_named(tmp_path: Path, fragment: str) -> None:
    copy = _copy(tmp_path)
    (copy / fragment).unlink()
    with pytest.raises(SourceError) as caught:
        _read(copy)
    message = str(caught.value)
    assert f"fragment {fragment} of update" in message and "nothing was stored" in message
    assert "\n" not in message


def test_bad_parts_fail_in_one_line(tmp_path: Path) -> None:
    copy = _copy(tmp_path)
    (copy / "package2" / "x" / "105").write_text("<ExtendedProperties><KBArticleID>")
    with pytest.raises(SourceError, match=r"package2/x/105: malformed XML"):
        _read(copy)
    copy = _copy(tmp_path / "2")
    (copy / "package" / "package.xml").write_text(
        '<?xml version="1.0"?><!DOCTYPE p [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
        "<OfflineSyncPackage>&b;</OfflineSyncPackage>")
    with pytest.raises(SourceError, match=r"package\.xml: refused unsafe XML"):
        _read(copy)
    copy = _copy(tmp_path / "3")
    index = copy / "index.xml"
    index.write_text(index.read_text().replace("package3.cab", "package9.cab"))
    with pytest.raises(SourceError, match=r"lists package9\.cab, which is neither extracted"):
        _read(copy)
    index.write_text('<INDEX><CABLIST><CAB NAME="../../etc.cab" /></CABLIST></INDEX>')
    with pytest.raises(SourceError, match="invalid cabinet name"):
        _read(copy)


@needs_cabextract
def test_a_broken_cabinet_or_missing_tool_fails_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cab = pack_catalog(FIXTURE, tmp_path / "wsusscn2.cab")
    broken = tmp_path / "broken.cab"
    broken.write_bytes(cab.read_bytes()[:5000])
    with pytest.raises(SourceError, match=r"broken\.cab: not a readable cabinet"):
        _read(broken, tmp_path / "work")
    monkeypatch.setattr(wsusscn2, "CABEXTRACT", "cabextract-not-installed")
    with pytest.raises(SourceError, match="cabextract is not installed"):
        _read(cab, tmp_path / "work")
