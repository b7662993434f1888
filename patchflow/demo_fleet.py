"""The demo's 25 simulated endpoints: varied Windows versions, builds and applications against
the bundled sample catalog, with one scripted install failure and one that needs a reboot."""

from __future__ import annotations

from typing import Any

# (os name, display version, build, installation type, [UBRs to cycle through], KB installed)
_OS = [
    ("Windows 11 Pro", "23H2", 22631, "Client", [5800, 5900, 6000], ["KB5890010", "KB5900010",
                                                                     "KB5900110"]),
    ("Windows 11 Enterprise", "24H2", 26100, "Client", [6400, 6500], ["KB5890020", "KB5900020"]),
    ("Windows 10 Enterprise", "22H2", 19045, "Client", [6200, 6300], ["KB5890030", "KB5900030"]),
    ("Windows Server 2022 Datacenter", None, 20348, "Server Core", [4000], ["KB5890040"]),
]
# (name template, publisher, versions to cycle through, arch)
_APPS = [
    ("7-Zip {v} (x64)", "Igor Pavlov", ["24.08", "25.01"], "x64"),
    ("VLC media player", "VideoLAN", ["3.0.20", "3.0.21"], "x64"),
    ("Notepad++ (64-bit x64)", "Notepad++ Team", ["8.6.9", "8.7.5"], "x64"),
    ("Mozilla Firefox (x64 en-US)", "Mozilla", ["140.0", "145.0"], "x64"),
    ("Java 8 Update 431 (64-bit)", "Oracle Corporation", ["8.0.4310.10"], "x64"),
]
FAILING_HOST = "WS-0002"  # its 7-Zip installer exits 1603
REBOOT_HOST = "WS-0001"  # its cumulative update exits 3010


def demo_fleet(count: int = 25) -> list[dict[str, Any]]:
    fleet = []
    for n in range(1, count + 1):
        os_name, version, build, kind, ubrs, kbs = _OS[(n - 1) % len(_OS)]
        host = f"SRV-{n:04d}" if kind.startswith("Server") else f"WS-{n:04d}"
        step = (n - 1) // len(_OS)
        ubr = ubrs[step % len(ubrs)]
        programs = []
        for i, (name, publisher, versions, arch) in enumerate(_APPS):
            if (n + i) % 3 == 0:
                continue  # not every machine has every application
            v = versions[(n + i) % len(versions)]
            programs.append({"name": name.format(v=v), "version": v, "publisher": publisher,
                             "product_code": None, "upgrade_code": None, "arch": arch,
                             "scope": "machine", "install_date": "2026-06-01"})
        doc: dict[str, Any] = {
            "schema_version": 1, "hostname": host, "domain": "demo.patchflow.test",
            "os": {"name": os_name, "display_version": version, "build": build, "ubr": ubr,
                   "arch": "x64", "language": "en-US", "hotpatch": False,
                   "installation_type": kind},
            "programs": programs,
            "updates": [{"kb": kb, "installed_on": "2026-09-01"}
                        for kb in kbs[: 1 + step % len(kbs)]],
            "pending_reboot": False,
            "collected_at": "2026-11-29T08:00:00Z",
        }
        if host == FAILING_HOST:
            doc["simulate"] = {"exit_codes": {"7zip.7zip": 1603}}
        if host == REBOOT_HOST:
            doc["simulate"] = {"exit_codes": {"KB5900110": 3010}}
        fleet.append(doc)
    return fleet
