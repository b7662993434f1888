"""Regenerates the bundled catalogs; the output is committed, this keeps it reviewable.

`python -m patchflow.sample_catalog.generate` writes the small invented test catalog;
`python -m patchflow.sample_catalog.generate --real ../shared/fixtures` copies the demo's slice of
real MSRC and winget data from the fixtures (see README.md beside this file).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape

from patchflow.sample_catalog import MSRC_DIR, WINGET_DIR, payload

PRODUCTS = {
    "21001": "Windows 11 Version 23H2 for x64-based Systems",
    "21002": "Windows 11 Version 24H2 for x64-based Systems",
    "21003": "Windows 10 Version 22H2 for x64-based Systems",
    "21004": "Windows 10 Version 22H2 for 32-bit Systems",
    "21005": "Windows Server 2022",
    "21006": "Windows Server 2022 (Server Core installation)",
}
# (KB, product ids, fixed build, supersedes, restart, subtype)
SEP = [
    ("5900010", ["21001"], "10.0.22631.5900", "5890010", "Yes", "Security Update"),
    ("5900020", ["21002"], "10.0.26100.6500", "5890020", "Yes", "Security Update"),
    ("5900030", ["21003", "21004"], "10.0.19045.6300", "5890030", "Yes", "Security Update"),
    ("5900040", ["21005", "21006"], "10.0.20348.4100", "5890040", "Yes", "Security Update"),
]
OCT = [
    ("5900110", ["21001"], "10.0.22631.6000", "5900010", "Yes", "Security Update"),
    ("5900120", ["21002"], "10.0.26100.6600", "5900020", "Yes", "Security Update"),
    ("5900130", ["21003", "21004"], "10.0.19045.6400", "5900030", "Yes", "Security Update"),
    ("5900140", ["21005", "21006"], "10.0.20348.4200", "5900040", "Maybe", "Security Update"),
    ("5900150", ["21001", "21002"], "", "", "No", "Servicing Stack Update"),
]
# CVE -> (title, severity, the KBs that fix it): gives the sample every severity.
SEP_CVES = {
    "CVE-2026-90001": ("Windows Kernel Elevation of Privilege Vulnerability", "Important",
                       ["5900010", "5900020", "5900030", "5900040"]),
    "CVE-2026-90002": ("Windows TCP/IP Remote Code Execution Vulnerability", "Critical",
                       ["5900040"]),
}
OCT_CVES = {
    "CVE-2026-90101": ("Windows SMB Client Remote Code Execution Vulnerability", "Critical",
                       ["5900110"]),
    "CVE-2026-90102": ("Windows Print Spooler Information Disclosure Vulnerability", "Moderate",
                       ["5900120", "5900130"]),
    "CVE-2026-90104": ("Windows Graphics Component Elevation of Privilege Vulnerability",
                       "Important", ["5900140"]),
    "CVE-2026-90103": ("Windows Servicing Stack Elevation of Privilege Vulnerability", "Low",
                       ["5900150"]),
}
LICENSES = {
    "7zip.7zip": "LGPL-2.1-or-later",
    "VideoLAN.VLC": "GPL-2.0-or-later",
    "Notepad++.Notepad++": "GPL-3.0-or-later",
    "PuTTY.PuTTY": "MIT",
    "Mozilla.Firefox": "MPL-2.0",
    "Oracle.JavaRuntimeEnvironment": "Proprietary",
}


def _json_doc(doc_id: str, title: str, released: str, fixes: list, cves: dict) -> dict:
    vulns = []
    for n, (cve, (cve_title, severity, kbs)) in enumerate(cves.items(), 1):
        mine = [fix for fix in fixes if fix[0] in kbs]
        pids = sorted({p for fix in mine for p in fix[1]})
        vulns.append({
            "Title": {"Value": cve_title},
            "CVE": cve,
            "Ordinal": str(n),
            "ProductStatuses": [{"ProductID": pids, "Type": 3}],
            "Threats": [{"Description": {"Value": severity}, "ProductID": [p], "Type": 3}
                        for p in pids]
            + [{"Description": {"Value": "Remote Code Execution"}, "ProductID": pids, "Type": 0}],
            "Remediations": [
                {
                    "Description": {"Value": kb},
                    "URL": f"https://catalog.update.microsoft.com/v7/site/Search.aspx?q=KB{kb}",
                    "Supercedence": sup,
                    "ProductID": pids_fix,
                    "Type": 2,
                    "RestartRequired": {"Value": restart},
                    "SubType": subtype,
                    "FixedBuild": build,
                }
                for kb, pids_fix, build, sup, restart, subtype in mine
            ]
            + [{"Description": {"Value": "Release Notes"}, "ProductID": pids, "Type": 3}],
        })
    return {
        "DocumentTitle": {"Value": title},
        "DocumentType": {"Value": "Security Update"},
        "DocumentTracking": {
            "Identification": {"ID": {"Value": doc_id}, "Alias": {"Value": doc_id}},
            "Status": 2,
            "Version": "1.0",
            "InitialReleaseDate": released,
            "CurrentReleaseDate": released,
        },
        "ProductTree": {
            "FullProductName": [{"ProductID": pid, "Value": name}
                                for pid, name in PRODUCTS.items()]
        },
        "Vulnerability": vulns,
    }


def _xml_doc(doc_id: str, title: str, released: str, fixes: list, cves: dict) -> str:
    ns = (
        'xmlns:vuln="http://www.icasi.org/CVRF/schema/vuln/1.1" '
        'xmlns:prod="http://www.icasi.org/CVRF/schema/prod/1.1" '
        'xmlns:cvrf="http://www.icasi.org/CVRF/schema/cvrf/1.1"'
    )
    out = [f"<cvrf:cvrfdoc {ns}>",
           f"  <cvrf:DocumentTitle>{escape(title)}</cvrf:DocumentTitle>",
           "  <cvrf:DocumentType>Security Update</cvrf:DocumentType>",
           "  <cvrf:DocumentTracking>",
           f"    <cvrf:Identification><cvrf:ID>{doc_id}</cvrf:ID></cvrf:Identification>",
           "    <cvrf:Status>Final</cvrf:Status><cvrf:Version>1.0</cvrf:Version>",
           f"    <cvrf:InitialReleaseDate>{released}</cvrf:InitialReleaseDate>",
           f"    <cvrf:CurrentReleaseDate>{released}</cvrf:CurrentReleaseDate>",
           "  </cvrf:DocumentTracking>",
           "  <prod:ProductTree>"]
    for pid, name in PRODUCTS.items():
        out.append(f'    <prod:FullProductName ProductID="{pid}">{escape(name)}'
                   "</prod:FullProductName>")
    out.append("  </prod:ProductTree>")
    for n, (cve, (cve_title, severity, kbs)) in enumerate(cves.items(), 1):
        mine = [fix for fix in fixes if fix[0] in kbs]
        pids = sorted({p for fix in mine for p in fix[1]})
        out.append(f'  <vuln:Vulnerability Ordinal="{n}">')
        out.append(f"    <vuln:Title>{escape(cve_title)}</vuln:Title>")
        out.append(f"    <vuln:CVE>{cve}</vuln:CVE>")
        out.append('    <vuln:ProductStatuses><vuln:Status Type="Known Affected">'
                   + "".join(f"<vuln:ProductID>{p}</vuln:ProductID>" for p in pids)
                   + "</vuln:Status></vuln:ProductStatuses>")
        out.append("    <vuln:Threats>")
        for p in pids:
            out.append(f'      <vuln:Threat Type="Severity"><vuln:Description>{severity}'
                       f"</vuln:Description><vuln:ProductID>{p}</vuln:ProductID></vuln:Threat>")
        out.append("    </vuln:Threats>")
        out.append("    <vuln:Remediations>")
        for kb, pids_fix, build, sup, restart, subtype in mine:
            out.append('      <vuln:Remediation Type="Vendor Fix">')
            out.append(f"        <vuln:Description>{kb}</vuln:Description>")
            out.append("        <vuln:URL>https://catalog.update.microsoft.com/v7/site/"
                       f"Search.aspx?q=KB{kb}</vuln:URL>")
            if sup:
                out.append(f"        <vuln:Supercedence>{sup}</vuln:Supercedence>")
            out.extend(f"        <vuln:ProductID>{p}</vuln:ProductID>" for p in pids_fix)
            out.append(f"        <vuln:RestartRequired>{restart}</vuln:RestartRequired>")
            out.append(f"        <vuln:SubType>{subtype}</vuln:SubType>")
            if build:
                out.append(f"        <vuln:FixedBuild>{build}</vuln:FixedBuild>")
            out.append("      </vuln:Remediation>")
        out.append('      <vuln:Remediation Type="Release Notes"><vuln:Description>Release Notes'
                   "</vuln:Description></vuln:Remediation>")
        out.append("    </vuln:Remediations>")
        out.append("  </vuln:Vulnerability>")
    out.append("</cvrf:cvrfdoc>")
    return "\n".join(out) + "\n"


# Package: (publisher folder path, name, publisher, [versions], installers(version) -> list)
def _installer(file_name: str, arch: str, itype: str, **extra: object) -> dict:
    data = {
        "Architecture": arch,
        "InstallerType": itype,
        "InstallerUrl": f"https://downloads.patchflow.invalid/{quote(file_name)}",
        "InstallerSha256": hashlib.sha256(payload(file_name)).hexdigest().upper(),
    }
    data.update(extra)
    return data


PUTTY_UPGRADE_CODE = "{2125B2B0-3E28-4B12-A0D3-5AEBE73B6D4E}"
PACKAGES = {
    "7zip.7zip": ("7/7zip/7zip", "7-Zip", "Igor Pavlov", ["24.08", "25.01"], lambda v: [
        _installer(f"7z{v.replace('.', '')}-x64.exe", "x64", "nullsoft",
                   AppsAndFeaturesEntries=[{"DisplayName": f"7-Zip {v} (x64)"}]),
        _installer(f"7z{v.replace('.', '')}.exe", "x86", "nullsoft",
                   AppsAndFeaturesEntries=[{"DisplayName": f"7-Zip {v}"}]),
    ], None),
    "VideoLAN.VLC": ("v/VideoLAN/VLC", "VLC media player", "VideoLAN", ["3.0.20", "3.0.21"],
                     lambda v: [_installer(f"vlc-{v}-win64.exe", "x64", "nullsoft"),
                                _installer(f"vlc-{v}-win32.exe", "x86", "nullsoft")], None),
    "Notepad++.Notepad++": ("n/Notepad++/Notepad++", "Notepad++", "Notepad++ Team",
                            ["8.6.9", "8.7.5"], lambda v: [
        _installer(f"npp.{v}.Installer.x64.exe", "x64", "nullsoft",
                   AppsAndFeaturesEntries=[{"DisplayName": "Notepad++ (64-bit x64)"}]),
    ], None),
    "PuTTY.PuTTY": ("p/PuTTY/PuTTY", "PuTTY", "Simon Tatham", ["0.81.0.0", "0.83.0.0"],
                    lambda v: [
        _installer(f"putty-64bit-{v}-installer.msi", "x64", "msi",
                   ProductCode="{" + f"00000000-0000-0000-0000-0000000{v[2:4]}064" + "}",
                   AppsAndFeaturesEntries=[{"DisplayName": f"PuTTY release {v[:4]} (64-bit)",
                                            "UpgradeCode": PUTTY_UPGRADE_CODE}]),
    ], None),
    "Mozilla.Firefox": ("m/Mozilla/Firefox", "Mozilla Firefox", "Mozilla", ["140.0", "145.0"],
                        lambda v: [
        _installer(f"Firefox Setup {v} {loc} x64.exe", "x64", "exe", InstallerLocale=loc,
                   InstallerSwitches={"Silent": "/S", "SilentWithProgress": "/S"})
        for loc in ("en-US", "de")
    ], None),
    "Oracle.JavaRuntimeEnvironment": (
        "o/Oracle/JavaRuntimeEnvironment", "Java 8", "Oracle", ["8.0.4310.10", "8.0.4510.9"],
        lambda v: [_installer(f"jre-8u{v.split('.')[2][:2]}-windows-x64.exe", "x64", "exe",
                              InstallerSwitches={"Silent": "/s", "SilentWithProgress": "/s"})],
        [{"AgreementLabel": "License Agreement",
          "AgreementUrl": "https://www.java.com/otnlicense"}],
    ),
}


def main() -> None:
    MSRC_DIR.mkdir(parents=True, exist_ok=True)
    (MSRC_DIR / "2026-Sep.json").write_text(json.dumps(
        _json_doc("2026-Sep", "September 2026 Security Updates (sample)", "2026-09-08T07:00:00",
                  SEP, SEP_CVES), indent=1) + "\n")
    (MSRC_DIR / "2026-Oct.xml").write_text(
        _xml_doc("2026-Oct", "October 2026 Security Updates (sample)", "2026-10-13T07:00:00",
                 OCT, OCT_CVES))
    for package_id, (path, name, publisher, versions, installers, agreements) in PACKAGES.items():
        for version in versions:
            folder = WINGET_DIR / "manifests" / path / version
            folder.mkdir(parents=True, exist_ok=True)
            head = f"PackageIdentifier: {package_id}\nPackageVersion: {version}\n"
            (folder / f"{package_id}.yaml").write_text(
                head + "DefaultLocale: en-US\nManifestType: version\nManifestVersion: 1.6.0\n")
            # JSON is YAML's flow style: the lists stay readable and need no YAML writer.
            (folder / f"{package_id}.installer.yaml").write_text(
                head + "Installers: " + json.dumps(installers(version)) + "\n"
                "ManifestType: installer\nManifestVersion: 1.6.0\n")
            locale = (head + f"PackageLocale: en-US\nPublisher: {publisher}\n"
                      f"PackageName: {name}\nLicense: {LICENSES[package_id]}\n"
                      f"ShortDescription: {name} (patchflow sample)\n")
            if agreements:
                locale += "Agreements: " + json.dumps(agreements) + "\n"
            (folder / f"{package_id}.locale.en-US.yaml").write_text(
                locale + "ManifestType: defaultLocale\nManifestVersion: 1.6.0\n")


# --- The demo's slice of real public data (`generate --real ../shared/fixtures`) ---------------

# Microsoft's two latest months in the fixtures: the demo's "now" is December 2024.
REAL_MSRC_MONTHS = ("2024-Nov", "2024-Dec")
# (package folder, versions released by the end of 2024 except Firefox 140.0 (June 2025), the
# only release of Firefox after 100.0 that the fixtures carry).
REAL_WINGET = {
    "7/7zip/7zip": ("19.00", "23.01"),
    "n/Notepad++/Notepad++": ("7.9.5", "8.6.9"),
    "p/PuTTY/PuTTY": ("0.76.0.0", "0.81.0.0"),
    "v/VideoLAN/VLC": ("3.0.10", "3.0.20"),
    "o/Oracle/JavaRuntimeEnvironment": ("8.0.2910.10", "8.0.4010.10"),
    "m/Mozilla/Firefox": ("100.0", "140.0"),
}
_URL_LINE = re.compile(r"^(\s*(?:- )?)InstallerUrl:\s*(\S+)\s*$")
_SHA_LINE = re.compile(r"^(\s*(?:- )?)InstallerSha256:\s*(\S+)\s*$")


def offline_installers(text: str, package_id: str, version: str) -> str:
    """A real installer manifest with each InstallerUrl/InstallerSha256 pair pointed at a
    generated payload (see `payload`), so the demo installs without a network; the published
    URL and hash stay beside them as comments. Every other line is kept byte for byte."""
    out: list[str] = []
    name = ""
    for n, line in enumerate(text.splitlines(), 1):
        url = _URL_LINE.match(line)
        sha = _SHA_LINE.match(line)
        if url:
            published = url.group(2)
            stem = published.rsplit("/", 1)[-1].split("?", 1)[0] or "installer"
            name = f"{package_id}-{version}-{n}-{stem}"
            out.append(f"{' ' * len(url.group(1))}# published InstallerUrl: {published}")
            out.append(f"{url.group(1)}InstallerUrl: "
                       f"https://downloads.patchflow.invalid/{quote(name)}")
        elif sha and name:
            digest = hashlib.sha256(payload(name)).hexdigest().upper()
            out.append(f"{' ' * len(sha.group(1))}# published InstallerSha256: {sha.group(2)}")
            out.append(f"{sha.group(1)}InstallerSha256: {digest}")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _vulnerability_feeds(fixtures: Path, target: Path) -> None:
    """The feeds' offline forms as an administrator would download them: CISA's KEV file,
    Mozilla's advisories in one archive (deterministic: sorted, no timestamps), NVD records."""
    import io
    import shutil
    import tarfile

    vuln = fixtures / "vuln"
    shutil.copyfile(next((vuln / "kev").glob("known_exploited_vulnerabilities-*.json.gz")),
                    target / "kev.json.gz")
    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w") as archive:
        for path in sorted((vuln / "mozilla").rglob("mfsa*.yml")):
            info = tarfile.TarInfo(f"advisories/{path.parent.name}/{path.name}")
            data = path.read_bytes()
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
    (target / "mozilla-advisories.tar.gz").write_bytes(gzip.compress(packed.getvalue(), mtime=0))
    (target / "nvd").mkdir()
    for path in sorted((vuln / "nvd").glob("CVE-*.json")):
        shutil.copyfile(path, target / "nvd" / path.name)


def main_real(fixtures: Path) -> None:
    import shutil

    from patchflow.sample_catalog import DEMO_MSRC_DIR, DEMO_VULN_DIR, DEMO_WINGET_DIR

    for folder in (DEMO_MSRC_DIR, DEMO_WINGET_DIR, DEMO_VULN_DIR):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    for month in REAL_MSRC_MONTHS:
        shutil.copyfile(fixtures / "msrc" / f"{month}.xml.gz", DEMO_MSRC_DIR / f"{month}.xml.gz")
    for path, versions in REAL_WINGET.items():
        package_id = ".".join(path.split("/")[1:])
        for version in versions:
            source = fixtures / "winget" / "manifests" / path / version
            target = DEMO_WINGET_DIR / "manifests" / path / version
            target.mkdir(parents=True)
            for suffix in ("yaml", "locale.en-US.yaml"):  # the other locales are not read
                shutil.copyfile(source / f"{package_id}.{suffix}",
                                target / f"{package_id}.{suffix}")
            installer = (source / f"{package_id}.installer.yaml").read_text(encoding="utf-8")
            (target / f"{package_id}.installer.yaml").write_text(
                offline_installers(installer, package_id, version), encoding="utf-8")
    _vulnerability_feeds(fixtures, DEMO_VULN_DIR)


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] == ["--real"] and len(sys.argv) == 3:
        main_real(Path(sys.argv[2]))
    else:
        main()
