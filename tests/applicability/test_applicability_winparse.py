"""Leaf helpers of the scan engine: inventory text parsers, OS -> MSRC product, name keys."""

from __future__ import annotations

import pytest

from applicability.names import infer_arch, normalize_code, normalize_name, normalize_publisher
from applicability.osmap import msrc_product, parse_fixed_build
from applicability.winparse import decode_text, parse_systeminfo, parse_wmic_qfe
from tests.support.paths import SHARED_FIXTURES

WESNG = SHARED_FIXTURES / "inventory" / "wesng-validation"


def _real(name: str) -> bytes:
    path = WESNG / name
    if not path.exists():
        pytest.skip(f"real upstream fixtures not found at {path} (../shared is absent)")
    return path.read_bytes()


def test_systeminfo_of_real_machines() -> None:
    w10 = parse_systeminfo(decode_text(_real("10_1809_x64_pro_en-us_20190307_systeminfo.txt")))
    assert (w10.hostname, w10.os_name, w10.build, w10.arch, w10.installation_type) == (
        "DESKTOP-LOQ9L09",
        "Windows 10 Pro",
        17763,
        "x64",
        "Client",
    )
    assert w10.hotfixes == ["KB4486553", "KB4470788", "KB4480056", "KB4487038", "KB4482887"]
    srv = parse_systeminfo(decode_text(_real("srv_2022_systeminfo.txt")))
    assert (srv.os_name, srv.build, srv.installation_type) == (
        "Windows Server 2022 Standard",
        20348,
        "Server",
    )
    w7 = parse_systeminfo(decode_text(_real("7_sp1_x64_enterprise_en-us_20190305_systeminfo.txt")))
    # systeminfo declares 273 hotfixes but lists only 245.
    assert (w7.build, w7.hotfixes_declared, len(w7.hotfixes)) == (7601, 273, 245)


def test_wmic_qfe_utf16_table() -> None:
    kbs = parse_wmic_qfe(decode_text(_real("10_1809_x64_pro_en-us_20190307_qfe.txt")))
    assert kbs == ["KB4486553", "KB4470788", "KB4480056", "KB4487038", "KB4482887"]
    sample = (
        "Description      FixComments  HotFixID   InstallDate\r\n"
        "Security Update               KB5034123  \r\n"
        "Update                        KB5034441  \r\n"
    ).encode("utf-16")
    assert parse_wmic_qfe(decode_text(sample)) == ["KB5034123", "KB5034441"]


@pytest.mark.parametrize(
    ("os_name", "dv", "build", "arch", "itype", "product"),
    [
        (
            "Windows 11 Pro",
            "23H2",
            22631,
            "x64",
            "Client",
            "Windows 11 Version 23H2 for x64-based Systems",
        ),
        (
            "Windows 10 Pro",
            "23H2",
            22631,
            "x64",
            "Client",  # ProductName quirk on Windows 11
            "Windows 11 Version 23H2 for x64-based Systems",
        ),
        (
            "Windows 11 Pro",
            "24H2",
            26100,
            "arm64",
            "Client",
            "Windows 11 Version 24H2 for ARM64-based Systems",
        ),
        (
            "Windows 10 Enterprise",
            "22H2",
            19045,
            "x86",
            "Client",
            "Windows 10 Version 22H2 for 32-bit Systems",
        ),
        (
            "Windows 10 Enterprise LTSC 2019",
            None,
            17763,
            "x64",
            "Client",
            "Windows 10 Version 1809 for x64-based Systems",
        ),
        ("Windows Server 2022 Datacenter", "21H2", 20348, "x64", "Server", "Windows Server 2022"),
        (
            "Windows Server 2022 Datacenter",
            "21H2",
            20348,
            "x64",
            "Server Core",
            "Windows Server 2022 (Server Core installation)",
        ),
        ("Windows Server 2019 Standard", "1809", 17763, "x64", "Server", "Windows Server 2019"),
        ("Windows Server 2016 Standard", "1607", 14393, "x64", "Server", "Windows Server 2016"),
        ("Windows Server 2012 R2 Standard", None, 9600, "x64", "Server", "Windows Server 2012 R2"),
        ("Windows Server 2025 Datacenter", "24H2", 26100, "x64", "Server", "Windows Server 2025"),
        (
            "Windows Server 2008 R2 Enterprise",
            None,
            7601,
            "x64",
            "Server",
            "Windows Server 2008 R2 for x64-based Systems Service Pack 1",
        ),
        (
            "Windows 7 Enterprise",
            None,
            7601,
            "x64",
            "Client",
            "Windows 7 for x64-based Systems Service Pack 1",
        ),
    ],
)
def test_msrc_product_names(
    os_name: str, dv: str | None, build: int, arch: str, itype: str, product: str
) -> None:
    assert msrc_product(os_name, dv, build, arch, itype) == (product, "")


def test_fixed_builds() -> None:
    assert parse_fixed_build("10.0.22631.3447") == (22631, 3447)
    assert parse_fixed_build("10.0.22000.3250\u200b\u200b") == (22000, 3250)  # real MSRC text
    assert parse_fixed_build("6.3.9600.21924") == (9600, 21924)
    for not_a_build in ("1.001", "16.0.17928.20114", "https://aka.ms/x", "8.0.40-1", None):
        assert parse_fixed_build(not_a_build) is None


@pytest.mark.parametrize(
    ("name", "key", "arch"),
    [
        ("Mozilla Firefox (x64 en-US)", "mozilla firefox", "x64"),
        ("Mozilla Firefox 140.0 (x86 de)", "mozilla firefox", "x86"),
        ("7-Zip 23.01 (x64 edition)", "7-zip", "x64"),
        ("PuTTY release 0.81 (64-bit Arm)", "putty", "arm64"),
        ("Notepad++ (32-bit x86)", "notepad++", "x86"),
        ("Java 8 Update 381 (64-bit)", "java 8", "x64"),
        (
            "Microsoft Visual C++ 2013 Redistributable (x64) - 12.0.30501",
            "microsoft visual c++ 2013 redistributable",
            "x64",
        ),
        ("Gpg4win (3.1.15)", "gpg4win", None),
    ],
)
def test_name_keys(name: str, key: str, arch: str | None) -> None:
    assert (normalize_name(name), infer_arch(name)) == (key, arch)


def test_publisher_and_code_keys() -> None:
    assert normalize_publisher("Oracle Corporation") == normalize_publisher("Oracle")
    assert normalize_publisher("JetBrains s.r.o.") == "jetbrains"
    assert normalize_publisher("GitHub, Inc.") == "github"
    assert normalize_publisher("Freie Software e.V.") == "freie software"
    assert normalize_code("'{23170f69-40c1-2701-1900-000001000000}'") == (
        "{23170F69-40C1-2701-1900-000001000000}"
    )
    assert normalize_code("23170F69-40C1-2701-1900-000001000000") == (
        "{23170F69-40C1-2701-1900-000001000000}"
    )
