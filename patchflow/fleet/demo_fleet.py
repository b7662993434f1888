"""The demo's 25 simulated endpoints, as they stood in mid-December 2024: real Windows releases
at real builds (the October, November and December 2024 cumulative updates, each with the KB
that brought it installed) and real releases of the default applications, against the bundled
slice of real data (patchflow/sample_catalog/real). One install is scripted to fail and one to
need a reboot."""

from __future__ import annotations

from typing import Any

# The cumulative updates of October, November and December 2024: (UBR, KB), from the MSRC
# documents' FixedBuild and Supercedence (the October KBs are what November supersedes).
_W11_23H2 = [(4317, "KB5044285"), (4460, "KB5046633"), (4602, "KB5048685")]
_W11_24H2 = [(2033, "KB5044284"), (2314, "KB5046617"), (2605, "KB5048667")]
_W10_22H2 = [(5011, "KB5044273"), (5131, "KB5046613"), (5247, "KB5048652")]
_WS_2022 = [(2762, "KB5044281"), (2849, "KB5046616"), (2966, "KB5048654")]
_WS_2019 = [(6414, "KB5044277"), (6532, "KB5046615"), (6659, "KB5048661")]
# (os name, display version, build, installation type, [(UBR, cumulative update KB)])
_OS = [
    ("Windows 11 Pro", "23H2", 22631, "Client", _W11_23H2),
    ("Windows 11 Enterprise", "24H2", 26100, "Client", _W11_24H2),
    ("Windows 10 Enterprise", "22H2", 19045, "Client", _W10_22H2),
    ("Windows Server 2022 Datacenter", "21H2", 20348, "Server", _WS_2022),
    ("Windows Server 2019 Standard", "1809", 17763, "Server", _WS_2019),
]
# (display name template, publisher, [versions as the Uninstall key shows them], arch): names
# as each release writes them, the older release first.
_APPS = [
    ("7-Zip {v} (x64)", "Igor Pavlov", ["19.00", "23.01"], "x64"),
    ("VLC media player", "VideoLAN", ["3.0.10", "3.0.20"], "x64"),
    ("Notepad++ (64-bit x64)", "Notepad++ Team", ["7.9.5", "8.6.9"], "x64"),
    ("PuTTY release {s} (64-bit)", "Simon Tatham", ["0.76.0.0", "0.81.0.0"], "x64"),
    ("Mozilla Firefox (x64 en-US)", "Mozilla", ["100.0"], "x64"),
    ("Java 8 Update {u} (64-bit)", "Oracle Corporation", ["8.0.2910.10", "8.0.4010.10"], "x64"),
]
FAILING_HOST = "WS-0002"  # its 7-Zip installer exits 1603
REBOOT_HOST = "WS-0001"  # its cumulative update (KB5048685) exits 3010
_INSTALLED_ON = {0: "2024-10-09", 1: "2024-11-13", 2: "2024-12-11"}


def _program(template: str, publisher: str, version: str, arch: str) -> dict[str, Any]:
    name = template.format(v=version, s=version.rsplit(".0.0", 1)[0],
                           u=version.split(".")[2][:-1] if version.count(".") == 3 else "")
    return {"name": name, "version": version, "publisher": publisher, "product_code": None,
            "upgrade_code": None, "arch": arch, "scope": "machine",
            "install_date": "2024-06-03"}


def demo_fleet(count: int = 25) -> list[dict[str, Any]]:
    fleet = []
    for n in range(1, count + 1):
        os_name, version, build, kind, updates = _OS[(n - 1) % len(_OS)]
        host = f"SRV-{n:04d}" if kind.startswith("Server") else f"WS-{n:04d}"
        step = ((n - 1) // len(_OS)) % len(updates)
        ubr, kb = updates[step]
        programs = [_program(template, publisher, versions[(n + i) % len(versions)], arch)
                    for i, (template, publisher, versions, arch) in enumerate(_APPS)
                    if (n + i) % 3 != 0]  # not every machine has every application
        doc: dict[str, Any] = {
            "schema_version": 1, "hostname": host, "domain": "demo.patchflow.test",
            "os": {"name": os_name, "display_version": version, "build": build, "ubr": ubr,
                   "arch": "x64", "language": "en-US", "hotpatch": False,
                   "installation_type": kind},
            "programs": programs,
            "updates": [{"kb": kb, "installed_on": _INSTALLED_ON[step]}],
            "pending_reboot": False,
            "collected_at": "2024-12-16T08:00:00Z",
        }
        if host == FAILING_HOST:
            doc["simulate"] = {"exit_codes": {"7zip.7zip": 1603}}
        if host == REBOOT_HOST:
            doc["simulate"] = {"exit_codes": {"KB5048685": 3010}}
        fleet.append(doc)
    return fleet
