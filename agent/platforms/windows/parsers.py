"""Parsers for what Windows tools print: fixed-width tables (`wmic qfe`, PowerShell's
Format-Table), CSV from PowerShell, `systeminfo`, and the registry's packed GUIDs and dates.
Pure functions over text, so they are tested against real captured outputs."""

from __future__ import annotations

import codecs
import csv
import datetime as dt
import io
import re

_KB = re.compile(r"\bKB(\d{4,9})\b", re.IGNORECASE)
_PACKAGE_KB = re.compile(r"^Package_(?:\d+_)?for_KB(\d{4,9})~", re.IGNORECASE)
_GUID = re.compile(r"^\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}$", re.I)
_DASHES = re.compile(r"^[\s-]+$")


def decode_output(raw: bytes) -> str:
    """Windows tools write UTF-16LE with a BOM (wmic), UTF-8 with or without a BOM, or the OEM
    code page; newlines are CRLF. Returns text with plain newlines."""
    if raw.startswith(codecs.BOM_UTF16_LE) or (len(raw) > 1 and raw[1:2] == b"\x00"):
        text = raw.decode("utf-16-le", errors="replace")
    elif raw.startswith(codecs.BOM_UTF8):
        text = raw[3:].decode("utf-8", errors="replace")
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", errors="replace")
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _spans_from_dashes(line: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"-+", line)]


def _spans_from_header(line: str) -> list[tuple[int, int]]:
    starts = [m.start() for m in re.finditer(r"\S+", line)]
    return [(start, starts[i + 1] if i + 1 < len(starts) else 10**6)
            for i, start in enumerate(starts)]


def parse_table(text: str) -> list[dict[str, str]]:
    """A fixed-width table as rows of {column: value}; values are left-aligned under their
    header. With a dashes line (Format-Table) the dashes give the widths and wrapped header
    lines above them are joined; without one (wmic) each header word starts a column.
    Blank lines inside the table are kept as rows with every value empty."""
    lines = text.split("\n")
    dash_at = next((i for i, line in enumerate(lines)
                    if "-" in line and _DASHES.match(line) and line.strip()), None)
    if dash_at is not None:
        spans = _spans_from_dashes(lines[dash_at])
        # Stretch each span to the next column's start, so long values are not cut.
        spans = [(start, spans[i + 1][0] if i + 1 < len(spans) else 10**6)
                 for i, (start, _end) in enumerate(spans)]
        header_lines: list[str] = []
        i = dash_at - 1
        while i >= 0 and lines[i].strip():
            header_lines.insert(0, lines[i])
            i -= 1
        headers = ["".join(h[s:e].strip() for h in header_lines) for s, e in spans]
        body = lines[dash_at + 1:]
    else:
        header_at = next((i for i, line in enumerate(lines) if line.strip()), None)
        if header_at is None:
            return []
        spans = _spans_from_header(lines[header_at])
        headers = [lines[header_at][s:e].strip() for s, e in spans]
        body = lines[header_at + 1:]
    while body and not body[-1].strip():
        body.pop()
    return [{h: line[s:e].strip() for h, (s, e) in zip(headers, spans, strict=True)}
            for line in body]


def parse_date(value: str | None) -> dt.date | None:
    """Dates as Windows tools print them: M/D/YYYY (en-US, what wmic prints), YYYY-MM-DD,
    YYYYMMDD (registry InstallDate), DD-MM-YYYY; unknown shapes give None, not a guess."""
    if not value:
        return None
    value = value.strip().split(" ")[0].rstrip(",")
    for fmt in ("%m/%d/%Y", "%Y-%m-%d", "%Y%m%d", "%d-%m-%Y", "%d.%m.%Y"):
        try:
            return dt.datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    return None


def parse_qfe_table(text: str) -> list[tuple[str, dt.date | None]]:
    """`wmic qfe` output → [(KBnnnn, installed_on)]."""
    found = []
    for row in parse_table(text):
        match = _KB.search(row.get("HotFixID", ""))
        if match:
            found.append((f"KB{int(match.group(1))}", parse_date(row.get("InstalledOn"))))
    return found


def parse_qfe_csv(text: str) -> list[tuple[str, dt.date | None]]:
    """PowerShell `Get-CimInstance Win32_QuickFixEngineering | ConvertTo-Csv` output."""
    found = []
    for row in csv.DictReader(io.StringIO(text.strip())):
        match = _KB.search(row.get("HotFixID") or "")
        if match:
            found.append((f"KB{int(match.group(1))}", parse_date(row.get("InstalledOn"))))
    return found


def kb_from_package(name: str) -> str | None:
    """A servicing package key name (`Package_for_KB5034123~31bf...~amd64~~10.0.1.7`) → KB."""
    match = _PACKAGE_KB.match(name)
    return f"KB{int(match.group(1))}" if match else None


def filetime_date(high: int | None, low: int | None) -> dt.date | None:
    """A FILETIME split in two DWORDs (servicing packages' InstallTimeHigh/Low) → date."""
    if high is None or low is None:
        return None
    ticks = (int(high) << 32) | (int(low) & 0xFFFFFFFF)
    try:
        return (dt.datetime(1601, 1, 1) + dt.timedelta(microseconds=ticks // 10)).date()
    except OverflowError:
        return None


def is_guid(name: str) -> bool:
    return bool(_GUID.match(name))


def unpack_guid(packed: str) -> str | None:
    """Windows Installer's packed GUID (32 hex digits, groups reversed) → `{XXXXXXXX-...}`.
    The UpgradeCodes key stores both upgrade and product codes this way."""
    if not re.fullmatch(r"[0-9A-Fa-f]{32}", packed):
        return None
    p = packed.upper()
    swap = "".join(p[i + 1] + p[i] for i in range(16, 32, 2))
    return "{" + f"{p[7::-1]}-{p[11:7:-1]}-{p[15:11:-1]}-{swap[:4]}-{swap[4:]}" + "}"


def parse_systeminfo(text: str) -> dict[str, object]:
    """`systeminfo` (English) → host, OS name, build, arch, locale and the hotfix list. The
    hotfix list is truncated by systeminfo itself on machines with many updates."""
    fields: dict[str, str] = {}
    hotfixes: list[str] = []
    current = ""
    for line in text.split("\n"):
        match = re.match(r"^([A-Za-z][^:]{1,40}):\s*(.*)$", line)
        if match and not line.startswith(" "):
            current = match.group(1).strip()
            fields[current] = match.group(2).strip()
        elif current.startswith("Hotfix") and (kb := _KB.search(line)):
            hotfixes.append(f"KB{int(kb.group(1))}")
    build = re.search(r"Build (\d+)", fields.get("OS Version", ""))
    system_type = fields.get("System Type", "").lower()
    arch = "x64" if system_type.startswith("x64") else (
        "arm64" if "arm64" in system_type else ("x86" if system_type.startswith("x86") else None)
    )
    locale = fields.get("System Locale", "").split(";")[0]
    return {
        "hostname": fields.get("Host Name"),
        "os_name": fields.get("OS Name", "").removeprefix("Microsoft ").strip() or None,
        "build": int(build.group(1)) if build else None,
        "arch": arch,
        "language": _locale_tag(locale),
        "domain": fields.get("Domain"),
        "hotfixes": hotfixes,
    }


def _locale_tag(value: str) -> str | None:
    """'en-us' → 'en-US'."""
    parts = value.strip().split("-")
    if not parts or not parts[0]:
        return None
    return "-".join([parts[0].lower(), *(p.upper() if len(p) == 2 else p for p in parts[1:])])
