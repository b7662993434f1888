"""The Windows inventory: installed programs, installed KBs, OS version, pending reboot, read
through a RegistryReader and a CommandRunner and returned as an inventory document."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from agent.platforms.windows import parsers
from agent.platforms.windows.readers import HKLM, HKU, CommandRunner, RegistryReader

CURRENT_VERSION = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion"
UNINSTALL = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall"
UNINSTALL_32 = r"SOFTWARE\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall"
USER_UNINSTALL = r"Software\Microsoft\Windows\CurrentVersion\Uninstall"
UPGRADE_CODES = r"SOFTWARE\Classes\Installer\UpgradeCodes"
CBS = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing"
ENVIRONMENT = r"SYSTEM\CurrentControlSet\Control\Session Manager\Environment"
SESSION_MANAGER = r"SYSTEM\CurrentControlSet\Control\Session Manager"
COMPUTER_NAME = r"SYSTEM\CurrentControlSet\Control\ComputerName"
TCPIP = r"SYSTEM\CurrentControlSet\Services\Tcpip\Parameters"
NLS_LANGUAGE = r"SYSTEM\CurrentControlSet\Control\Nls\Language"
UI_LANGUAGES = r"SYSTEM\CurrentControlSet\Control\MUI\UILanguages"
# Microsoft software beyond the Uninstall key (inventory `ms_facts`, docs/microsoft-products.md).
NDP_V4 = r"SOFTWARE\Microsoft\NET Framework Setup\NDP\v4\Full"
CLICK_TO_RUN = r"SOFTWARE\Microsoft\Office\ClickToRun\Configuration"
SQL_INSTANCES = r"SOFTWARE\Microsoft\Microsoft SQL Server\Instance Names\SQL"
SQL_ROOT = r"SOFTWARE\Microsoft\Microsoft SQL Server"
EXCHANGE_SETUP = r"SOFTWARE\Microsoft\ExchangeServer\v15\Setup"
DEFENDER_SIGNATURES = r"SOFTWARE\Microsoft\Windows Defender\Signature Updates"
# Click-to-Run update channels by the GUID that ends CDNBaseUrl.
C2R_CHANNELS = {
    "492350f6-3a01-4f97-b9c0-c7c6ddf67d60": "Current",
    "64256afe-f5d9-4f86-8936-8840a6a4f5be": "Current Preview",
    "55336b82-a18d-4dd6-b5f6-9e5095c314a6": "Monthly Enterprise",
    "7ffbc6bf-bc32-4f92-8982-f9dd17fd3114": "Semi-Annual Enterprise",
    "b8f9b850-328d-4355-9145-c59439a0c4cf": "Semi-Annual Enterprise Preview",
    "f2e724c1-748f-4b47-8fb8-8e0d210e9208": "Office 2019 Volume Licensed",
    "5030841d-c919-4594-8d2d-84ae4f96e58e": "Office LTSC 2021 Volume Licensed",
    "7983bac0-e531-40cf-be00-fd24fe66619c": "Office LTSC 2024 Volume Licensed",
}
_KB_IN_NAME = re.compile(r"\(KB(\d{6,8})\)", re.IGNORECASE)

# CBS package states that mean "on the machine": Installed, Permanent, and Superseded (installed,
# then replaced by a newer package; QFE keeps listing those too).
_INSTALLED_STATES = {0x70, 0x80, 0x50}
_ARCH = {"AMD64": "x64", "X86": "x86", "ARM64": "arm64"}
_SERVICE_SIDS = {".DEFAULT", "S-1-5-18", "S-1-5-19", "S-1-5-20"}
_QFE_POWERSHELL = (
    "Get-CimInstance -ClassName Win32_QuickFixEngineering | Select-Object HotFixID,"
    "@{n='InstalledOn';e={if ($_.InstalledOn) {$_.InstalledOn.ToString('yyyy-MM-dd')}}} | "
    "ConvertTo-Csv -NoTypeInformation"
)
# Column sizes on the server: longer values are cut here rather than rejected there.
_LIMITS = {"name": 512, "version": 128, "publisher": 255}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).replace("\x00", "").strip()
    return text or None


def _int(value: Any) -> int | None:
    try:
        return int(str(value).strip(), 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        return None


class WindowsCollector:
    def __init__(self, registry: RegistryReader, runner: CommandRunner) -> None:
        self.registry = registry
        self.runner = runner
        self._systeminfo: dict[str, Any] | None = None

    # --- identity and OS ---------------------------------------------------------------------

    def systeminfo(self) -> dict[str, Any]:
        """Fallback source (English output only) when a registry value is unreadable."""
        if self._systeminfo is None:
            raw = self.runner.run(["systeminfo"])
            self._systeminfo = parsers.parse_systeminfo(parsers.decode_output(raw)) if raw else {}
        return self._systeminfo

    def hostname(self) -> str:
        active = self.registry.values(HKLM, COMPUTER_NAME + r"\ActiveComputerName") or {}
        name = _text(active.get("ComputerName")) or self.systeminfo().get("hostname")
        if not name:
            import socket

            name = socket.gethostname().split(".")[0]
        return str(name).upper()

    def domain(self) -> str | None:
        params = self.registry.values(HKLM, TCPIP) or {}
        return _text(params.get("Domain")) or _text(params.get("NV Domain"))

    def arch(self) -> str:
        env = self.registry.values(HKLM, ENVIRONMENT) or {}
        value = _text(env.get("PROCESSOR_ARCHITECTURE"))
        if value and value.upper() in _ARCH:
            return _ARCH[value.upper()]
        return str(self.systeminfo().get("arch") or "x64")

    def language(self) -> str | None:
        """The installation's UI language as a tag (en-US): the MUI language whose LCID is the
        InstallLanguage, else the first installed one."""
        install = _text((self.registry.values(HKLM, NLS_LANGUAGE) or {}).get("InstallLanguage"))
        lcid = _int("0x" + install) if install else None
        languages = self.registry.subkeys(HKLM, UI_LANGUAGES)
        for tag in languages:
            values = self.registry.values(HKLM, UI_LANGUAGES + "\\" + tag) or {}
            if lcid is not None and _int(values.get("LCID")) == lcid:
                return tag
        if languages:
            return languages[0]
        return self.systeminfo().get("language")

    def os_info(self) -> dict[str, Any]:
        cv = self.registry.values(HKLM, CURRENT_VERSION) or {}
        info = self.systeminfo() if not cv.get("ProductName") else {}
        name = _text(cv.get("ProductName")) or info.get("os_name") or "Windows"
        name = name.removeprefix("Microsoft ").strip()
        build = _int(cv.get("CurrentBuild")) or _int(cv.get("CurrentBuildNumber"))
        build = build or info.get("build") or 0
        installation_type = _text(cv.get("InstallationType"))
        # Windows 11 kept "Windows 10" in ProductName; the build tells them apart.
        if build >= 22000 and name.startswith("Windows 10") and installation_type != "Server":
            name = "Windows 11" + name[len("Windows 10"):]
        display_version = _text(cv.get("DisplayVersion")) or _text(cv.get("ReleaseId"))
        if not display_version:
            service_pack = _text(cv.get("CSDVersion")) or ""
            if service_pack.startswith("Service Pack "):
                display_version = "SP" + service_pack.removeprefix("Service Pack ")
        return {
            "name": name[:255],
            "display_version": display_version[:16] if display_version else None,
            "build": build,
            # Unknown stays unknown (null): never report UBR 0, which reads as "build .0".
            "ubr": _int(cv.get("UBR")),
            "arch": self.arch(),
            "language": self.language(),
            # Hotpatch enrollment is not visible in the registry; the policy layer decides.
            "hotpatch": False,
            "installation_type": installation_type
            if installation_type in ("Client", "Server", "Server Core") else None,
        }

    # --- programs ----------------------------------------------------------------------------

    def _upgrade_codes(self) -> dict[str, str]:
        """ProductCode → UpgradeCode, from Windows Installer's UpgradeCodes key, whose subkeys
        are packed upgrade codes and whose value names are packed product codes."""
        mapping: dict[str, str] = {}
        for packed_upgrade in self.registry.subkeys(HKLM, UPGRADE_CODES):
            upgrade = parsers.unpack_guid(packed_upgrade)
            values = self.registry.values(HKLM, UPGRADE_CODES + "\\" + packed_upgrade) or {}
            for packed_product in values:
                product = parsers.unpack_guid(packed_product)
                if upgrade and product:
                    mapping[product] = upgrade
        return mapping

    def _uninstall_views(self, native: str) -> list[tuple[str, str, str | None, str]]:
        views: list[tuple[str, str, str | None, str]] = [(HKLM, UNINSTALL, native, "machine")]
        if native != "x86":
            views.append((HKLM, UNINSTALL_32, "x86", "machine"))
        for sid in self.registry.subkeys(HKU, ""):
            if sid.upper() in _SERVICE_SIDS or sid.endswith("_Classes"):
                continue
            views.append((HKU, sid + "\\" + USER_UNINSTALL, None, "user"))
        return views

    def programs(self) -> list[dict[str, Any]]:
        """Programs as Add/Remove Programs shows them: entries without DisplayName, system
        components and updates of another product (ParentKeyName) are not programs."""
        native = self.arch()
        upgrade_codes = self._upgrade_codes()
        found: list[dict[str, Any]] = []
        seen: set[tuple[Any, ...]] = set()
        for hive, path, arch, scope in self._uninstall_views(native):
            for key in self.registry.subkeys(hive, path):
                values = self.registry.values(hive, path + "\\" + key) or {}
                name = _text(values.get("DisplayName"))
                if not name or _int(values.get("SystemComponent")) == 1:
                    continue
                if _text(values.get("ParentKeyName")):
                    continue
                product_code = key.upper() if parsers.is_guid(key) else None
                program = {
                    "name": name[: _LIMITS["name"]],
                    "version": (_text(values.get("DisplayVersion")) or "")[: _LIMITS["version"]]
                    or None,
                    "publisher": (_text(values.get("Publisher")) or "")[: _LIMITS["publisher"]]
                    or None,
                    "product_code": product_code,
                    "upgrade_code": upgrade_codes.get(product_code) if product_code else None,
                    "arch": arch,
                    "scope": scope,
                    "install_date": _iso(parsers.parse_date(_text(values.get("InstallDate")))),
                }
                identity = tuple(program.values())
                if identity not in seen:
                    seen.add(identity)
                    found.append(program)
        return found

    # --- updates -----------------------------------------------------------------------------

    def _qfe(self) -> list[tuple[str, dt.date | None]]:
        raw = self.runner.run(["wmic", "qfe"])
        if raw:
            return parsers.parse_qfe_table(parsers.decode_output(raw))
        # wmic is gone from recent Windows 11 builds; PowerShell's CIM cmdlet reads the same class.
        raw = self.runner.run(["powershell", "-NoProfile", "-NonInteractive", "-Command",
                               _QFE_POWERSHELL])
        if raw:
            return parsers.parse_qfe_csv(parsers.decode_output(raw))
        return [(kb, None) for kb in self.systeminfo().get("hotfixes", [])]

    def _servicing_packages(self) -> list[tuple[str, dt.date | None]]:
        """KBs from the servicing stack's package list: QFE misses some (language packs,
        features on demand, some cumulative updates)."""
        found = []
        packages = CBS + r"\Packages"
        for name in self.registry.subkeys(HKLM, packages):
            kb = parsers.kb_from_package(name)
            if kb is None:
                continue
            values = self.registry.values(HKLM, packages + "\\" + name) or {}
            if _int(values.get("CurrentState")) not in _INSTALLED_STATES:
                continue
            found.append((kb, parsers.filetime_date(_int(values.get("InstallTimeHigh")),
                                                    _int(values.get("InstallTimeLow")))))
        return found

    def _product_updates(self) -> list[tuple[str, dt.date | None]]:
        """KBs of Office/SharePoint MSP updates: Uninstall entries under their product
        (ParentKeyName) named "Security Update for Microsoft Office 2016 (KB5002635) 64-Bit
        Edition". Windows' hotfix list never shows them, and the product's DisplayVersion does
        not move when they are applied, so they are the installed state of Office MSI."""
        found = []
        for hive, path, _arch, _scope in self._uninstall_views(self.arch()):
            if hive != HKLM:
                continue
            for key in self.registry.subkeys(hive, path):
                values = self.registry.values(hive, path + "\\" + key) or {}
                name = _text(values.get("DisplayName")) or ""
                if not _text(values.get("ParentKeyName")):
                    continue
                for number in _KB_IN_NAME.findall(name):
                    found.append((f"KB{number}",
                                  parsers.parse_date(_text(values.get("InstallDate")))))
        return found

    def updates(self) -> list[dict[str, Any]]:
        merged: dict[str, dt.date | None] = {}
        for kb, installed_on in self._qfe() + self._servicing_packages() + self._product_updates():
            if merged.get(kb) is None:
                merged[kb] = installed_on
        return [{"kb": kb, "installed_on": _iso(day)} for kb, day in merged.items()]

    # --- Microsoft software beyond the Uninstall key -----------------------------------------

    def ms_facts(self) -> list[dict[str, Any]]:
        """What the scan needs about Microsoft software that the Uninstall key does not say:
        the .NET Framework 4.x release, the Click-to-Run build and channel, SQL Server
        instances and their build, the Exchange build, the Defender engine version."""
        facts: list[dict[str, Any]] = []

        def add(kind: str, name: Any = None, version: Any = None, detail: Any = None) -> None:
            facts.append({"kind": kind, "name": _cut(name, 128), "version": _cut(version, 64),
                          "detail": _cut(detail, 64)})

        release = _int((self.registry.values(HKLM, NDP_V4) or {}).get("Release"))
        if release:
            add("dotnet_framework", ".NET Framework 4.x", str(release))
        c2r = self.registry.values(HKLM, CLICK_TO_RUN) or {}
        if _text(c2r.get("VersionToReport")):
            url = _text(c2r.get("UpdateChannel")) or _text(c2r.get("CDNBaseUrl")) or ""
            channel = C2R_CHANNELS.get(url.rstrip("/").rsplit("/", 1)[-1].casefold())
            add("click_to_run", _text(c2r.get("ProductReleaseIds")),
                _text(c2r.get("VersionToReport")), channel)
        instances = self.registry.values(HKLM, SQL_INSTANCES) or {}
        for name, instance_id in sorted(instances.items()):
            setup = self.registry.values(HKLM, f"{SQL_ROOT}\\{instance_id}\\Setup") or {}
            level = _text(setup.get("PatchLevel")) or _text(setup.get("Version"))
            if level:
                add("sql_server", name, level)
        exchange = self.registry.values(HKLM, EXCHANGE_SETUP) or {}
        parts = [_int(exchange.get(k)) for k in ("MsiProductMajor", "MsiProductMinor",
                                                 "MsiBuildMajor", "MsiBuildMinor")]
        if all(p is not None for p in parts):
            add("exchange", "Exchange Server", ".".join(str(p) for p in parts))
        engine = _text((self.registry.values(HKLM, DEFENDER_SIGNATURES) or {}).get(
            "EngineVersion"))
        if engine:
            add("defender_engine", "Microsoft Defender", engine)
        return facts

    # --- reboot ------------------------------------------------------------------------------

    def pending_reboot(self) -> bool:
        """The usual markers: servicing and Windows Update reboot keys, pending file renames,
        Updates\\UpdateExeVolatile, and a computer rename waiting for a restart."""
        if self.registry.values(HKLM, CBS + r"\RebootPending") is not None:
            return True
        auto_update = r"SOFTWARE\Microsoft\Windows\CurrentVersion\WindowsUpdate\Auto Update"
        if self.registry.values(HKLM, auto_update + r"\RebootRequired") is not None:
            return True
        session = self.registry.values(HKLM, SESSION_MANAGER) or {}
        renames = session.get("PendingFileRenameOperations")
        if renames and any(_text(item) for item in _as_list(renames)):
            return True
        updates = self.registry.values(HKLM, r"SOFTWARE\Microsoft\Updates") or {}
        if _int(updates.get("UpdateExeVolatile")):
            return True
        active = self.registry.values(HKLM, COMPUTER_NAME + r"\ActiveComputerName") or {}
        pending = self.registry.values(HKLM, COMPUTER_NAME + r"\ComputerName") or {}
        if active.get("ComputerName") and pending.get("ComputerName"):
            return str(active["ComputerName"]).upper() != str(pending["ComputerName"]).upper()
        return False

    def collect(self) -> dict[str, Any]:
        return {
            "schema_version": 1,
            "hostname": self.hostname(),
            "domain": self.domain(),
            "os": self.os_info(),
            "programs": self.programs(),
            "updates": self.updates(),
            "ms_facts": self.ms_facts(),
            "pending_reboot": self.pending_reboot(),
            "collected_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        }


def _cut(value: Any, limit: int) -> str | None:
    text = _text(value)
    return text[:limit] if text else None


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]
