"""The Windows inventory: installed programs, installed KBs, OS version, pending reboot, read
through a RegistryReader and a CommandRunner and returned as an inventory document."""

from __future__ import annotations

import datetime as dt
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
            "ubr": _int(cv.get("UBR")) or 0,
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

    def updates(self) -> list[dict[str, Any]]:
        merged: dict[str, dt.date | None] = {}
        for kb, installed_on in self._qfe() + self._servicing_packages():
            if merged.get(kb) is None:
                merged[kb] = installed_on
        return [{"kb": kb, "installed_on": _iso(day)} for kb, day in merged.items()]

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
            "pending_reboot": self.pending_reboot(),
            "collected_at": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        }


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]
