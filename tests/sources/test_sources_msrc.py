"""MSRC CVRF parser on the project's own miniature documents (no ../shared needed)."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
from pathlib import Path

import pytest

from sources.msrc import (
    fetch_document,
    fetch_updates_index,
    iter_directory,
    parse_cvrf,
    parse_cvrf_vulnerabilities,
    parse_updates_index,
)
from sources.records import ParsedDocument, PatchRecord, SourceError
from tests.support import paths

FIXTURES = paths.FIXTURES / "sources" / "msrc"


def _read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _by_kb(doc: ParsedDocument) -> dict[str, PatchRecord]:
    return {p.kb or "": p for p in doc.patches}


@pytest.fixture(params=["tiny.xml", "tiny.json"])
def tiny(request: pytest.FixtureRequest) -> ParsedDocument:
    return parse_cvrf(_read(request.param), request.param)


def test_document_identity_and_dates(tiny: ParsedDocument) -> None:
    assert tiny.key == "2030-Jan"
    assert tiny.release_date == dt.date(2030, 2, 1)  # CurrentReleaseDate
    assert tiny.errors == []
    assert all(p.release_date == dt.date(2030, 1, 8) for p in tiny.patches)  # Initial


def test_only_kb_vendor_fixes_become_patches(tiny: ParsedDocument) -> None:
    # Skipped: "Release Notes" and "kernel" and empty Vendor Fix descriptions, Known Issue 5090009.
    assert [p.key for p in tiny.patches] == ["KB5090001", "KB5090002", "KB5090003"]
    for patch in tiny.patches:
        assert (patch.source, patch.vendor, patch.category) == (
            "msrc", "Microsoft", "Security Updates")
        assert patch.kb == patch.key


def test_kb_merged_over_cves_and_products(tiny: ParsedDocument) -> None:
    patch = _by_kb(tiny)["KB5090001"]
    # "5090001" in one CVE and "KB5090001" in another are the same patch.
    assert patch.cves == ("CVE-2030-0001", "CVE-2030-0002")
    assert patch.severity == "Critical"
    assert patch.restart_required == "Required"  # Yes wins over Maybe
    assert patch.supersedes == ("KB5080001",)
    assert patch.info_url == "https://catalog.update.microsoft.com/v7/site/Search.aspx?q=KB5090001"
    assert patch.title == "2030-01 Security Update for Windows 11 Version 23H2 (KB5090001)"
    rows = {r.name: r for r in patch.products}
    x64 = rows["Windows 11 Version 23H2 for x64-based Systems"]
    # Critical (CVE-1) beats Moderate (CVE-2); the empty FixedBuild of CVE-2 does not erase it.
    assert (x64.severity, x64.fixed_build, x64.supersedes, x64.subtype, x64.restart_required) == (
        "Critical", "10.0.22631.9001", "KB5080001", "Security Update", "Required")
    arm = rows["Windows 11 Version 23H2 for ARM64-based Systems"]
    assert arm.severity == "Important"  # Important (CVE-1) beats Low (CVE-2)


def test_hotpatch_subtype_and_restart(tiny: ParsedDocument) -> None:
    patch = _by_kb(tiny)["KB5090002"]
    assert patch.restart_required == "Not Required"
    assert patch.title.startswith("2030-01 Security Hotpatch Update for Windows Server 2022 ")
    rows = {r.name: r for r in patch.products}
    assert {r.subtype for r in patch.products} == {"SecurityHotpatchUpdate"}
    assert rows["Windows Server 2022"].severity == "Important"
    assert rows["Windows Server 2022 (Server Core installation)"].severity == "Unspecified"
    assert patch.severity == "Important"


def test_compound_product_id_and_threat_without_product(tiny: ParsedDocument) -> None:
    patch = _by_kb(tiny)["KB5090003"]
    (row,) = patch.products
    assert row.name == "Microsoft .NET Framework 4.8.1 on Windows Server 2022"  # "2001-3001"
    assert row.severity == "Important"  # Severity threat with no ProductID covers all
    assert row.restart_required is None  # empty RestartRequired
    assert patch.restart_required == "May Require"
    assert patch.supersedes == ()
    assert patch.info_url is None


def test_json_and_xml_spellings_give_identical_records() -> None:
    xml_doc = parse_cvrf(_read("tiny.xml"))
    json_doc = parse_cvrf(_read("tiny.json"))
    assert xml_doc.patches == json_doc.patches
    assert (xml_doc.key, xml_doc.release_date) == (json_doc.key, json_doc.release_date)


def test_gzip_detected_by_magic_and_hash_of_decompressed_bytes() -> None:
    raw = _read("tiny.xml")
    plain = parse_cvrf(raw)
    packed = parse_cvrf(gzip.compress(raw))
    assert packed.patches == plain.patches
    assert packed.content_hash == plain.content_hash == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("name", ["billion-laughs.xml", "external-entity.xml"])
def test_hostile_xml_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(SourceError) as err:
        parse_cvrf(_read(name), name)
    message = str(err.value)
    assert message.startswith(f"{name}: refused unsafe XML: EntitiesForbidden")
    assert "\n" not in message


def test_truncated_xml_is_a_one_line_error() -> None:
    raw = _read("tiny.xml")
    with pytest.raises(SourceError) as err:
        parse_cvrf(raw[: len(raw) // 2], "2030-Jan")
    message = str(err.value)
    assert message.startswith("2030-Jan: malformed XML: ")
    assert "line" in message and "column" in message and "\n" not in message


def test_truncated_json_is_a_one_line_error() -> None:
    raw = _read("tiny.json")
    with pytest.raises(SourceError, match=r"^2030-Jan: malformed JSON: .*line \d+") as err:
        parse_cvrf(raw[:500], "2030-Jan")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (gzip.compress(b"<cvrf/>", mtime=0)[:-6], "corrupt gzip"),
        (b"", "neither JSON nor XML"),
        (b"PK\x03\x04 zip", "neither JSON nor XML"),
        (b"[1, 2]", "neither JSON nor XML"),
        (b"<html><body>Service Unavailable</body></html>", "not a CVRF 1.1 document"),
        (b'{"DocumentTracking": {}}', "no DocumentTracking.Identification.ID"),
    ],
)
def test_unusable_documents(raw: bytes, reason: str) -> None:
    with pytest.raises(SourceError, match=reason):
        parse_cvrf(raw, "doc")


def test_json_with_wrong_types_is_tolerated() -> None:
    raw = (
        b'{"DocumentTracking": {"Identification": {"ID": {"Value": "2030-Feb"}}},'
        b' "ProductTree": "oops", "Vulnerability": [7, {"CVE": "CVE-2030-9",'
        b' "Threats": {"not": "a list"}, "Remediations": [{"Type": 2,'
        b' "Description": {"Value": "5090100"}, "ProductID": "9"}]}]}'
    )
    doc = parse_cvrf(raw)
    (patch,) = doc.patches
    assert patch.key == "KB5090100"
    assert patch.products[0].name == "ProductID 9"
    assert doc.errors == ["2030-Feb: ProductID not in ProductTree: 9"]


def test_updates_index() -> None:
    entries = parse_updates_index(_read("updates-index.json"))
    assert [e["ID"] for e in entries] == ["2030-Jan", "2030-Feb"]
    assert entries[0]["CurrentReleaseDate"] == dt.date(2030, 2, 1)
    assert entries[0]["CvrfUrl"] == "https://api.msrc.microsoft.com/cvrf/v3.0/cvrf/2030-Jan"
    with pytest.raises(SourceError, match="updates index"):
        parse_updates_index(b'{"value": ')


def test_iter_directory_sorted_and_only_documents(tmp_path: Path) -> None:
    (tmp_path / "2030-Feb.json").write_bytes(b"{}")
    (tmp_path / "2030-Jan.xml.gz").write_bytes(gzip.compress(_read("tiny.xml")))
    (tmp_path / "2029-Dec.xml").write_bytes(b"<x/>")
    (tmp_path / "updates-index.json").write_bytes(b"{}")
    (tmp_path / "notes.txt").write_bytes(b"")
    items = list(iter_directory(tmp_path))
    assert [key for key, _ in items] == ["2029-Dec", "2030-Feb", "2030-Jan"]
    assert parse_cvrf(items[2][1]).key == "2030-Jan"


class _FakeResponse:
    content = b"{}"

    def raise_for_status(self) -> None:
        return None


class _FakeSession:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], float]] = []

    def get(self, url: str, headers: dict[str, str], timeout: float) -> _FakeResponse:
        self.calls.append((url, headers, timeout))
        return _FakeResponse()


def test_fetch_helpers_build_urls_and_ask_for_json() -> None:
    session = _FakeSession()
    base = "https://api.msrc.microsoft.com/cvrf/v3.0/"
    assert fetch_document(session, "2024-Jan", base=base, timeout=5) == b"{}"  # type: ignore[arg-type]
    fetch_updates_index(session, base=base, timeout=5)  # type: ignore[arg-type]
    assert session.calls == [
        (f"{base}cvrf/2024-Jan", {"Accept": "application/json"}, 5),
        (f"{base}updates", {"Accept": "application/json"}, 5),
    ]


def test_vulnerability_facts_name_products_as_the_patch_parser_does() -> None:
    """Both parsers read the ProductTree through one helper, so CVSS per product and the patch
    rows name the same product (the JSON path of parse_cvrf_vulnerabilities used to keep a
    padded name untrimmed, and the last spelling of a ProductID where parse_cvrf keeps the
    first)."""
    body = json.loads(_read("tiny.json"))
    windows = body["ProductTree"]["Branch"][0]["Items"][0]["Items"][0]
    windows["Value"] = f"  {windows['Value']}  "
    body["Vulnerability"][0]["CVSSScoreSets"] = [
        {"BaseScore": 7.5, "Vector": "CVSS:3.1/AV:N", "ProductID": ["1001"]}]
    raw = json.dumps(body).encode()
    (facts, *_) = parse_cvrf_vulnerabilities(raw, "tiny")
    name = "Windows 11 Version 23H2 for x64-based Systems"
    assert facts.per_product == {name: (7.5, "CVSS:3.1/AV:N")}
    assert name in {row.name for p in parse_cvrf(raw).patches for row in p.products}
