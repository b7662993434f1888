"""Windows facts the Microsoft rules need: OS → MSRC product name, build families, FixedBuild.

MSRC names products by marketing version ("Windows 11 Version 23H2 for x64-based Systems"), while
an endpoint reports a build number; the build is the reliable part (ProductName says "Windows 10"
on Windows 11, DisplayVersion is absent before 20H2), so the mapping goes by build first and by
the reported names only where the build does not decide. Names are compared case-insensitively
because MSRC itself is inconsistent ("Windows 11 version 21H2", "Windows 8.1 for x64-based
systems").
"""

from __future__ import annotations

import re

import pandas as pd

WIN10_VERSIONS: dict[int, str] = {
    10586: "1511",
    14393: "1607",
    15063: "1703",
    16299: "1709",
    17134: "1803",
    17763: "1809",
    18362: "1903",
    18363: "1909",
    19041: "2004",
    19042: "20H2",
    19043: "21H1",
    19044: "21H2",
    19045: "22H2",
}
WIN11_VERSIONS: dict[int, str] = {
    22000: "21H2",
    22621: "22H2",
    22631: "23H2",
    26100: "24H2",
    26200: "25H2",
    28000: "26H1",
}
SERVER_BY_BUILD: dict[int, str] = {
    26100: "2025",
    25398: "2022, 23H2 Edition",
    20348: "2022",
    17763: "2019",
    14393: "2016",
    9600: "2012 R2",
    9200: "2012",
    7601: "2008 R2",
    6003: "2008",
    6002: "2008",
}
# Releases that share one servicing branch get the same cumulative updates with the same UBR,
# and MSRC sometimes quotes the sibling's build ("10.0.22621.3880" on a 23H2 product row).
FAMILY: dict[int, int] = {
    19041: 19041,
    19042: 19041,
    19043: 19041,
    19044: 19041,
    19045: 19041,
    22621: 22621,
    22631: 22621,
    26100: 26100,
    26200: 26100,
}
KERNEL_VERSIONS = {(6, 0), (6, 1), (6, 2), (6, 3), (10, 0)}
_ARCH_SUFFIX = {"x64": "x64-based Systems", "x86": "32-bit Systems", "arm64": "ARM64-based Systems"}
_BUILD_RE = re.compile(r"(\d+)\.(\d+)\.(\d+)\.(\d+)")
_INVISIBLE = re.compile(r"[\s\u200b-\u200f\u2060\ufeff]+")


def family(build: int) -> int:
    """The servicing branch of a build: builds of one family compare by UBR."""
    return FAMILY.get(int(build), int(build))


def parse_fixed_build(value: object) -> tuple[int, int] | None:
    """(build, ubr) of a Windows FixedBuild like "10.0.22631.3447", else None.

    Zero-width spaces occur in real documents ("10.0.22000.3250\\u200b"). Only Windows kernel
    versions count: "1.001" (IE Cumulative), "16.0.17928.20114" (an Office build) or a URL are
    not Windows builds and send the row to the KB rule.
    """
    if not isinstance(value, str):
        return None
    m = _BUILD_RE.fullmatch(_INVISIBLE.sub("", value))
    if not m:
        return None
    major, minor, build, ubr = (int(g) for g in m.groups())
    if (major, minor) not in KERNEL_VERSIONS or build < 1000:
        return None
    return build, ubr


def normalize_arch(value: object) -> str | None:
    """x64 / x86 / arm64 (or arm, neutral) from the spellings agents and manifests use; None when
    unknown."""
    if not isinstance(value, str):
        return None
    v = value.strip().casefold().replace("_", "-")
    if v in {"x64", "amd64", "x86-64", "64-bit", "64bit", "win64", "x64-based pc"}:
        return "x64"
    if v in {"x86", "i386", "i686", "32-bit", "32bit", "win32", "x86-based pc"}:
        return "x86"
    if v in {"arm64", "aarch64", "arm64-based pc"}:
        return "arm64"
    if v in {"arm", "arm32"}:
        return "arm"
    if v == "neutral":
        return "neutral"
    return None


def _text(value: object) -> str:
    return value.strip() if isinstance(value, str) else ""


def msrc_product(
    os_name: object,
    display_version: object,
    build: object,
    arch: object,
    installation_type: object,
) -> tuple[str | None, str]:
    """The MSRC product name for an endpoint's OS, or (None, why not)."""
    name = _text(os_name).casefold()
    itype = _text(installation_type).casefold()
    b = int(build) if build is not None and not pd.isna(build) else 0
    a = normalize_arch(arch)
    core = itype == "server core"
    server = "server" in name or itype in {"server", "server core"}
    if server:
        year = SERVER_BY_BUILD.get(b)
        if year is None:
            m = re.search(r"server (\d{4}(?: r2)?)", name)
            year = m.group(1).upper() if m else None
        if year is None:
            return None, f"no MSRC product for server build {b} ({_text(os_name)!r})"
        if year == "2022, 23H2 Edition":
            return "Windows Server 2022, 23H2 Edition (Server Core installation)", ""
        if year in {"2008", "2008 R2"}:
            if a not in {"x64", "x86"} or (year == "2008 R2" and a == "x86"):
                return None, f"no MSRC product for Windows Server {year} on {arch!r}"
            sp = "Service Pack 1" if year == "2008 R2" else "Service Pack 2"
            base = f"Windows Server {year} for {_ARCH_SUFFIX[a]} {sp}"
        else:
            base = f"Windows Server {year}"
        return base + (" (Server Core installation)" if core else ""), ""
    if a is None:
        return None, f"unknown architecture {arch!r}"
    suffix = _ARCH_SUFFIX[a]
    if b >= 22000 or "windows 11" in name:
        version = WIN11_VERSIONS.get(b) or _text(display_version).upper() or None
        if version is None:
            return None, f"unknown Windows 11 build {b}"
        if a == "x86":
            return None, "Windows 11 has no 32-bit edition"
        return f"Windows 11 Version {version} for {suffix}", ""
    if b >= 10240 or "windows 10" in name:
        if b == 10240:
            return f"Windows 10 for {suffix}", ""
        version = WIN10_VERSIONS.get(b) or _text(display_version).upper() or None
        if version is None:
            return None, f"unknown Windows 10 build {b}"
        return f"Windows 10 Version {version} for {suffix}", ""
    if b == 9600 or "windows 8.1" in name:
        return f"Windows 8.1 for {suffix}", ""
    if b == 7601 or "windows 7" in name:
        if b == 7600:
            return None, "Windows 7 without Service Pack 1 is out of support"
        return f"Windows 7 for {suffix} Service Pack 1", ""
    return None, f"no MSRC product for {_text(os_name)!r} build {b}"


def normalize_kb(value: object) -> str | None:
    """'KB5034123' from '5034123', 'kb5034123 ', 'KB5034123'; None for anything else."""
    if not isinstance(value, str):
        return None
    m = re.fullmatch(r"(?:KB)?(\d{5,8})", value.strip().upper())
    return f"KB{m.group(1)}" if m else None


def normalize_kb_series(s: pd.Series) -> pd.Series:
    """Vectorised `normalize_kb` (NA for anything that is not a KB number)."""
    digits = s.astype("str").str.strip().str.upper().str.extract(r"^(?:KB)?(\d{5,8})$")[0]
    return ("KB" + digits).astype("str")
