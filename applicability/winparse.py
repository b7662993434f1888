"""Parsers for Windows inventory text: `systeminfo` and `wmic qfe` output.

They turn what an admin can paste from a machine (or what the agent captures) into the rows the
scan frames need. Real captures come in several encodings (wmic writes UTF-16LE with a BOM and
CRLF; systeminfo in the console code page), so `decode_text` takes bytes. `systeminfo` shows no
UBR and truncates its hotfix list, which is why the scan accepts an unknown UBR and falls back
to the KB rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from applicability.osmap import normalize_kb

_SYSTEM_TYPE = {"x64-based pc": "x64", "x86-based pc": "x86", "arm64-based pc": "arm64"}


@dataclass
class SystemInfo:
    """The fields of `systeminfo` the scan uses."""

    hostname: str | None = None
    os_name: str | None = None  # "Windows 10 Pro" (the "Microsoft " prefix removed)
    build: int | None = None
    arch: str | None = None
    installation_type: str | None = None  # "Client" or "Server" (Server Core is not shown)
    hotfixes: list[str] = field(default_factory=list)
    hotfixes_declared: int | None = None  # "273 Hotfix(s) Installed." (the list may be shorter)


def decode_text(raw: bytes) -> str:
    """Text of a capture: UTF-16 (BOM or NUL-interleaved), UTF-8, else Windows-1252."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if len(raw) > 1 and raw[1:2] == b"\x00":
        return raw.decode("utf-16-le")
    for enc in ("utf-8-sig", "cp1252"):
        try:
            return raw.decode(enc)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def parse_systeminfo(text: str) -> SystemInfo:
    """Fields of an English `systeminfo` listing; unknown fields stay None."""
    info = SystemInfo()
    in_hotfix = False
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z][\w ().:-]*?):\s+(.*)$", line)
        if m and not line.startswith(" "):
            key, value = m.group(1).strip(), m.group(2).strip()
            in_hotfix = key == "Hotfix(s)"
            if key == "Host Name":
                info.hostname = value
            elif key == "OS Name":
                info.os_name = re.sub(r"^Microsoft\s+", "", value).strip()
            elif key == "OS Version":
                b = re.search(r"Build (\d+)", value) or re.match(r"\d+\.\d+\.(\d+)", value)
                info.build = int(b.group(1)) if b else None
            elif key == "OS Configuration":
                info.installation_type = "Server" if "server" in value.casefold() else "Client"
            elif key == "System Type":
                info.arch = _SYSTEM_TYPE.get(value.casefold())
            elif in_hotfix:
                n = re.match(r"(\d+)", value)
                info.hotfixes_declared = int(n.group(1)) if n else None
        elif in_hotfix:
            item = re.match(r"^\s+\[\d+\]:\s*(\S+)", line)
            kb = normalize_kb(item.group(1)) if item else None
            if kb:
                info.hotfixes.append(kb)
            elif not line.startswith(" "):
                in_hotfix = False
    if info.os_name and "server" in info.os_name.casefold():
        info.installation_type = "Server"
    return info


def parse_wmic_qfe(text: str) -> list[str]:
    """Installed KB numbers from a `wmic qfe` table (fixed-width columns, header first)."""
    lines = [ln.lstrip("\ufeff") for ln in text.splitlines()]
    header = next((i for i, ln in enumerate(lines) if "HotFixID" in ln), None)
    kbs: list[str] = []
    if header is None:
        return kbs
    start = lines[header].index("HotFixID")
    for ln in lines[header + 1 :]:
        cell = ln[start:].split()
        kb = normalize_kb(cell[0]) if cell else None
        if kb is None:  # columns shifted (a wide Description): find the KB anywhere
            m = re.search(r"\bKB\d{5,8}\b", ln, re.IGNORECASE)
            kb = normalize_kb(m.group(0)) if m else None
        if kb and kb not in kbs:
            kbs.append(kb)
    return kbs
