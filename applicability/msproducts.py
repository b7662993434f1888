"""Installed Microsoft software → MSRC product names (pure; table: docs/microsoft-products.md).

MSRC names Office, .NET, Edge, SQL Server, Exchange, SharePoint and Visual Studio by product and
edition ("Microsoft Office 2016 (64-bit edition)", ".NET 8.0 installed on Windows", "Microsoft
SQL Server 2022 for x64-based Systems (GDR)"), while an endpoint reports Uninstall entries
("Microsoft Office Professional Plus 2016" 16.0.4266.1001, "Microsoft .NET Runtime - 8.0.8
(x64)") and a few facts the agent reads where the Uninstall key is not enough (the .NET
Framework release DWORD, the Click-to-Run build and channel, SQL Server instances with their
servicing line, Exchange and SharePoint builds). This module maps one to the other, entry by
entry, so the engine can memoise it per distinct entry.

Each mapping says how the product is serviced (`kind`), which decides the rule:

- `per_kb`: Office MSI and SharePoint: updates are per component, not cumulative, several KBs a
  month can all be needed; installed state comes from installed KBs (the agent reads Office's
  own "Security Update for Microsoft Office 2016 (KB5002635) 64-Bit Edition" entries, see
  `kbs_in_name`), never from DisplayVersion, which does not move when an MSP patch is applied.
- `cumulative`: .NET, ASP.NET Core, Edge, SQL Server per servicing line, Exchange per CU, Visual
  Studio per minor version, Remote Desktop client, Malware Protection Engine, .NET Framework per
  Windows release: the newest fix per product is the one to report, older ones are set aside.
- `c2r`: Microsoft 365 Apps / Office 2019 / LTSC 2021 / 2024 (Click-to-Run): MSRC publishes no
  build, so the endpoint's build cannot be judged from MSRC; the scan says so.
- `unknown`: recognised but not judgeable from what was reported (e.g. a SQL Server without
  instance facts); the scan says so instead of staying silent.

`compare` is the version the FixedBuild is compared with (None when the reported version does
not move with security updates), `version` the one shown to the administrator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from applicability.osmap import normalize_arch

PER_KB, CUMULATIVE, C2R, UNKNOWN = "per_kb", "cumulative", "c2r", "unknown"

_NOT_WINDOWS = re.compile(r"\b(?:linux|mac ?os|mac|android|ios|azure|mariner)\b", re.IGNORECASE)

# Agent fact kinds (inventory `ms_facts[].kind`).
FACT_KINDS = (
    "dotnet_framework",  # version: the NDP\v4\Full Release DWORD ("533325")
    "click_to_run",  # name: ProductReleaseIds, version: VersionToReport, detail: channel
    "sql_server",  # name: instance, version: PatchLevel ("16.0.4135.4"), detail: "GDR"|"CU 14"
    "exchange",  # version: the Exchange build ("15.2.1544.11")
    "sharepoint",  # name: "Microsoft SharePoint Server 2019", version: build ("16.0.10412.20001")
    "visual_studio",  # name: display name, version: the release ("17.10.4")
    "defender_engine",  # version: AMEngineVersion ("1.1.24090.11")
)


@dataclass(frozen=True)
class MsProduct:
    """One MSRC product an installed entry stands for."""

    product: str
    kind: str
    version: str | None  # shown to the administrator
    compare: str | None  # compared with FixedBuild (None: KB rule only)
    source: str  # the entry it came from, for reasons and `endpoints show`
    note: str = ""  # why it cannot be judged (c2r / unknown)
    family: str = ""  # products reported together (".NET 8.0" and its "installed on Windows")

    @property
    def group(self) -> str:
        """The key of "one row per product": the family when set, else the product."""
        return (self.family or self.product).casefold()


_KB_IN_NAME = re.compile(r"\(KB(\d{6,8})\)", re.IGNORECASE)
_UPDATE_ENTRY = re.compile(r"^(?:Security Update|Update|Hotfix) for Microsoft ", re.IGNORECASE)
_OFFICE_SUITE = re.compile(
    r"^Microsoft Office (?P<ed>Professional Plus|Professional|Standard|Home and Business|"
    r"Home and Student)? ?(?P<year>2016)(?P<c2r> - [a-z]{2}-[a-z]{2})?$",
    re.IGNORECASE,
)
_OFFICE_APP = re.compile(
    r"^Microsoft (?P<app>Visio|Project)(?: (?:Professional|Standard))? (?P<year>2016)"
    r"(?P<c2r> - [a-z]{2}-[a-z]{2})?$",
    re.IGNORECASE,
)
_C2R = re.compile(
    r"^(?:Microsoft 365 Apps for (?:enterprise|business)|Microsoft 365 - |Microsoft Office 365 "
    r"|Microsoft Office (?:LTSC )?(?:Professional Plus|Standard|Professional|Home and "
    r"Business|Home and Student)? ?(?:LTSC )?(?P<year>2019|2021|2024))",
    re.IGNORECASE,
)
_DOTNET = re.compile(
    r"^Microsoft (?:\.NET Runtime|Windows Desktop Runtime|\.NET Core Runtime) - "
    r"(?P<v>(?P<major>\d+)\.(?P<minor>\d+)\.\d+)",
    re.IGNORECASE,
)
_ASPNET = re.compile(
    r"^Microsoft ASP\.NET Core (?P<v>(?P<major>\d+)\.(?P<minor>\d+)\.\d+)"
    r"(?: - Shared Framework| Hosting Bundle|.*Runtime)",
    re.IGNORECASE,
)
_VS = re.compile(
    r"^(?:Microsoft )?Visual Studio (?:Community|Professional|Enterprise|Build Tools) "
    r"(?P<year>2017|2019|2022)$",
    re.IGNORECASE,
)
_SHAREPOINT = re.compile(
    r"^Microsoft SharePoint (?:Enterprise )?Server (?P<ed>2016|2019|Subscription Edition)",
    re.IGNORECASE,
)
_SQL_YEAR = {"16": "2022", "15": "2019", "14": "2017", "13": "2016"}
_SQL_UNINSTALL = re.compile(r"^Microsoft SQL Server (?P<year>20\d\d) \((?:64|32)-bit\)$", re.I)
# Exchange builds → the CU product MSRC names (major.minor.build).
EXCHANGE_CU: dict[str, str] = {
    "15.1.2507": "Microsoft Exchange Server 2016 Cumulative Update 23",
    "15.2.1258": "Microsoft Exchange Server 2019 Cumulative Update 13",
    "15.2.1544": "Microsoft Exchange Server 2019 Cumulative Update 14",
    "15.2.1748": "Microsoft Exchange Server 2019 Cumulative Update 15",
}
# SQL Server: the build number (third part) where the CU line starts, and each CU's first
# build; a security update on a CU line keeps the CU's number (16.0.4140.3 is CU 14 + GDR).
_SQL_CU_FROM = {"2022": 4000, "2019": 4000, "2017": 3000}
SQL_CU_BUILDS: dict[str, tuple[tuple[int, int], ...]] = {
    "2022": ((4095, 10), (4105, 11), (4115, 12), (4125, 13), (4135, 14), (4145, 15), (4165, 16),
             (4175, 17)),
    "2019": ((4355, 25), (4365, 26), (4375, 27), (4385, 28), (4405, 29), (4415, 30)),
    "2017": ((3456, 31),),
}
# .NET Framework 4.x Release DWORD lower bounds → the version MSRC names in product rows.
_NDP_RELEASES = ((533320, "4.8.1"), (528040, "4.8"), (461808, "4.7.2"), (394802, "4.6.2"))


def _bits(arch: object) -> str | None:
    a = normalize_arch(arch)
    return {"x64": "64", "x86": "32"}.get(a or "")


def _is_microsoft(publisher: object) -> bool:
    return not isinstance(publisher, str) or "microsoft" in publisher.casefold()


_MAYBE = ("microsoft", "visual studio", "remote desktop", "security update for", "update for",
          "hotfix for")


def could_map(name: object) -> bool:
    """A cheap first test on a display name: False means no mapping and no KB (most programs
    of a fleet), so the engine runs the full rules only on the few names that pass."""
    return isinstance(name, str) and name.lstrip().casefold().startswith(_MAYBE)


def kbs_in_name(name: object) -> list[str]:
    """KBs an Office/SharePoint update entry names ("Security Update for Microsoft Office 2016
    (KB5002635) 64-Bit Edition" → ["KB5002635"]): MSP updates appear in the Uninstall key, not
    in Windows' list of installed hotfixes."""
    if not isinstance(name, str) or not _UPDATE_ENTRY.match(name):
        return []
    return [f"KB{m}" for m in _KB_IN_NAME.findall(name)]


def _office_components(edition: str) -> list[str]:
    apps = ["Word", "Excel", "PowerPoint", "Outlook"]
    if edition.casefold() in {"professional plus", "professional"}:
        apps += ["Access", "Publisher"]
    return apps


def map_program(name: object, version: object, publisher: object, arch: object) -> list[MsProduct]:
    """The MSRC products one Uninstall entry stands for (empty for anything else)."""
    if not isinstance(name, str) or not _is_microsoft(publisher):
        return []
    n = " ".join(name.split())
    v = version.strip() if isinstance(version, str) and version.strip() else None
    bits = _bits(arch)
    if _UPDATE_ENTRY.match(n):
        return []
    if m := _OFFICE_SUITE.match(n):
        if m.group("c2r") or _c2r_build(v):
            return [_c2r(f"Microsoft Office {m.group('year')}", n, v, bits)]
        if bits is None:
            return [_unknown(f"Microsoft Office {m.group('year')}", n, v, "edition (32/64-bit)")]
        out = [MsProduct(f"Microsoft Office 2016 ({bits}-bit edition)", PER_KB, v, None, n)]
        for app in _office_components(m.group("ed") or ""):
            out.append(MsProduct(f"Microsoft {app} 2016 ({bits}-bit edition)", PER_KB, v, None, n))
        if (m.group("ed") or "").casefold() == "professional plus":
            out.append(MsProduct(f"Skype for Business 2016 ({bits}-bit)", PER_KB, v, None, n))
        return out
    if m := _OFFICE_APP.match(n):
        if m.group("c2r") or _c2r_build(v) or bits is None:
            return []
        product = f"Microsoft {m.group('app').title()} 2016 ({bits}-bit edition)"
        return [MsProduct(product, PER_KB, v, None, n)]
    if m := _C2R.match(n):
        return [_c2r(n, n, v, bits)]
    if m := _DOTNET.match(n):
        line = f"{m.group('major')}.{m.group('minor')}"
        if int(m.group("major")) < 5:
            return []
        fam = f".NET {line}"
        return [
            MsProduct(f"{fam} installed on Windows", CUMULATIVE, m.group("v"), m.group("v"), n,
                      family=fam),
            MsProduct(fam, CUMULATIVE, m.group("v"), m.group("v"), n, family=fam),
        ]
    if m := _ASPNET.match(n):
        line = f"{m.group('major')}.{m.group('minor')}"
        return [MsProduct(f"ASP.NET Core {line}", CUMULATIVE, m.group("v"), m.group("v"), n)]
    if n.casefold() == "microsoft edge":
        return [MsProduct("Microsoft Edge (Chromium-based)", CUMULATIVE, v, v, n)]
    if n.casefold() == "remote desktop" and v:
        return [MsProduct("Remote Desktop client for Windows Desktop", CUMULATIVE, v, v, n)]
    if m := _VS.match(n):
        # DisplayVersion is an internal build (17.10.35013.160), not the release MSRC quotes.
        return [_unknown(f"Visual Studio {m.group('year')}", n, v, "release (17.x.y)")]
    if m := _SHAREPOINT.match(n):
        return _sharepoint(m.group("ed"), v, None, n)
    if m := _SQL_UNINSTALL.match(n):
        return [_unknown(f"Microsoft SQL Server {m.group('year')}", n, v, "instances")]
    return []


def _c2r_build(version: str | None) -> bool:
    """Click-to-Run builds are 16.0.1xxxx.2xxxx; MSI Office 2016 is 16.0.4xxx.1xxx."""
    parts = (version or "").split(".")
    return len(parts) == 4 and parts[0] == "16" and parts[2].isdigit() and int(parts[2]) >= 6000


def _c2r(name: str, source: str, version: str | None, bits: str | None) -> MsProduct:
    return MsProduct(
        name,
        C2R,
        version,
        None,
        source,
        note=(
            f"{name} {version or ''} is Click-to-Run: MSRC publishes no build for it, so this "
            "endpoint's build cannot be judged from MSRC alone (see "
            "https://aka.ms/OfficeSecurityReleases)"
        ).replace("  ", " "),
    )


def _unknown(name: str, source: str, version: str | None, what: str) -> MsProduct:
    return MsProduct(
        name, UNKNOWN, version, None, source,
        note=f"{name}: its {what} was not reported by the agent, so it cannot be judged",
    )


def _sharepoint(
    edition: str, version: str | None, build: str | None, source: str
) -> list[MsProduct]:
    ed = edition.strip()
    names = [f"Microsoft SharePoint Server {ed}"]
    if ed == "2016":
        names.append("Microsoft SharePoint Enterprise Server 2016")
    return [MsProduct(p, PER_KB, version or build, build, source) for p in names]


def windows_installable(product: str) -> bool:
    """False for products that cannot be installed on Windows (Linux, Mac, Android, iOS, Azure
    services): they are never candidates, whatever an inventory says."""
    return not _NOT_WINDOWS.search(product)


def sql_line(year: str, version: str) -> str:
    """"GDR", "CU n", or "" (unknown) from a SQL Server build, when the agent did not say."""
    parts = version.split(".")
    if len(parts) < 3 or not parts[2].isdigit() or year not in _SQL_CU_FROM:
        return ""
    build = int(parts[2])
    if build < _SQL_CU_FROM[year]:
        return "GDR"
    known = [cu for first, cu in SQL_CU_BUILDS.get(year, ()) if build >= first]
    return f"CU {known[-1]}" if known else ""


def framework_products(release: object, os_product: str | None) -> list[MsProduct]:
    """The .NET Framework products of a Release DWORD on one Windows release (MSRC names them
    per Windows release: "Microsoft .NET Framework 3.5 AND 4.8.1 on Windows 11 Version 23H2 for
    x64-based Systems"); the catalog decides which of the spellings exists."""
    try:
        value = int(str(release).strip())
    except ValueError:
        return []
    fw = next((name for low, name in _NDP_RELEASES if value >= low), None)
    if fw is None or not os_product:
        return []
    src = f".NET Framework {fw} (release {value})"
    names = [f"Microsoft .NET Framework 3.5 AND {fw} on {os_product}",
             f"Microsoft .NET Framework {fw} on {os_product}"]
    if fw in {"4.6.2", "4.7.2"}:
        names.append(f"Microsoft .NET Framework 4.6.2/4.7/4.7.1/4.7.2 on {os_product}")
    fam = f".NET Framework on {os_product}"
    return [MsProduct(n, CUMULATIVE, fw, None, src, family=fam) for n in names]


def map_fact(
    kind: object, name: object, version: object, detail: object, os_product: str | None
) -> list[MsProduct]:
    """The MSRC products one agent fact stands for."""
    v = version.strip() if isinstance(version, str) and version.strip() else None
    nm = name.strip() if isinstance(name, str) else ""
    det = detail.strip() if isinstance(detail, str) else ""
    if kind == "dotnet_framework":
        return framework_products(v, os_product)
    if kind == "click_to_run":
        label = f"{nm or 'Office Click-to-Run'}" + (f" ({det} channel)" if det else "")
        return [_c2r(label, label, v, None)]
    if kind == "sql_server":
        parts = (v or "").split(".")
        year = _SQL_YEAR.get(parts[0]) if parts else None
        src = f"SQL Server instance {nm or '?'} {v or ''}".strip()
        if year is None:
            return [_unknown("Microsoft SQL Server", src, v, "version")]
        line = det.upper().replace("CU", "CU ").replace("  ", " ").strip()
        if line in {"", "CU"}:
            line = sql_line(year, v or "")
        if line == "GDR":
            base = "Service Pack 3 (GDR)" if year == "2016" else "(GDR)"
        elif re.fullmatch(r"CU \d+", line):
            base = f"({line})"
        else:
            what = "servicing line (GDR or CU n)"
            return [_unknown(f"Microsoft SQL Server {year}", src, v, what)]
        return [MsProduct(f"Microsoft SQL Server {year} for x64-based Systems {base}",
                          CUMULATIVE, v, v, src)]
    if kind == "exchange":
        parts = (v or "").split(".")
        key = ".".join(str(int(p)) for p in parts[:3] if p.isdigit())
        product = EXCHANGE_CU.get(key)
        if product is None:
            return [_unknown("Microsoft Exchange Server", f"Exchange {v}", v, "cumulative update")]
        return [MsProduct(product, CUMULATIVE, v, v, f"Exchange {v}")]
    if kind == "sharepoint":
        m = _SHAREPOINT.match(nm)
        return _sharepoint(m.group("ed"), v, v, nm) if m else []
    if kind == "visual_studio":
        parts = (v or "").split(".")
        if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
            return []
        major, minor = parts[0], parts[1]
        if major == "17":
            product = f"Microsoft Visual Studio 2022 version 17.{minor}"
        elif major == "16":
            product = "Microsoft Visual Studio 2019 version 16.11 (includes 16.0 - 16.10)"
        elif major == "15":
            product = "Microsoft Visual Studio 2017 version 15.9 (includes 15.0 - 15.8)"
        else:
            return []
        return [MsProduct(product, CUMULATIVE, v, v, nm or f"Visual Studio {v}")]
    if kind == "defender_engine" and v:
        return [MsProduct("Microsoft Malware Protection Engine", CUMULATIVE, v, v, "Defender")]
    return []


_VERSION_TEXT = re.compile(r"\d+(?:\.\d+)+")


def is_version(fixed: object) -> bool:
    """True when a FixedBuild is a plain dotted version ("131.0.2903.112", "15.02.1544.014")."""
    return isinstance(fixed, str) and bool(_VERSION_TEXT.fullmatch(fixed.strip()))


def line_of(product: str, fixed: object) -> bool:
    """False when a row of a CU product quotes a build of another CU (MSRC's February 2024
    Exchange 2019 CU13 row quotes a CU14 build): such a row cannot be compared by version."""
    want = next((k for k, p in EXCHANGE_CU.items() if p.casefold() == product.casefold()), None)
    if want is None or not isinstance(fixed, str):
        return True
    parts = fixed.split(".")
    got = ".".join(str(int(p)) for p in parts[:3] if p.isdigit())
    return got == want


def order_by_kb(product: str) -> bool:
    """True for products whose FixedBuild spellings are not comparable month to month (.NET
    Framework: "4.8.09214.01" then "4.8.1.9256.03"): the newest fix is the highest KB."""
    return product.casefold().startswith("microsoft .net framework")
