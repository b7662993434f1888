"""winget manifests (winget-pkgs layout) to third-party patch records.

One package folder holds one folder per version; each version is a multi-file manifest
(version + installer + defaultLocale + locale files, schema 1.1 onward) or, in schema 1.0, a
single "singleton" file. Installer fields may sit at the root of the installer manifest or on
each installer; the installer's own value wins, as in the winget client.

YAML is read with the safe loader only (sources.safe_yaml). Community manifests are not always
well formed, so a bad installer entry costs only that entry (a one-line reason in
ParsedDocument.errors); a version with nothing usable left raises SourceError, which
parse_package_dir records and moves past.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from sources.records import (
    ARCHES,
    INSTALLER_TYPES,
    InstallerRecord,
    ParsedDocument,
    PatchRecord,
    SourceError,
)
from sources.safe_yaml import safe_load
from sources.versions import version_key

DEFAULT_PACKAGES: tuple[str, ...] = (
    "Adobe.Acrobat.Reader.64-bit",
    "Adobe.Acrobat.Reader.32-bit",
    "VideoLAN.VLC",
    "PuTTY.PuTTY",
    "Notepad++.Notepad++",
    "Oracle.JavaRuntimeEnvironment",
    "7zip.7zip",
    "Mozilla.Firefox",
    "Mozilla.Thunderbird",
)

_YAML_SUFFIXES = (".yaml", ".yml")
_SHA256 = re.compile(r"^[0-9A-Fa-f]{64}$")
_SCOPES = ("machine", "user")
_AFE_KEYS = ("DisplayName", "DisplayVersion", "Publisher", "ProductCode", "UpgradeCode")
# Unquoted versions such as `PackageVersion: 19.00` load as floats (19.0); read the text instead.
_VERSION_LINE = re.compile(
    rb"^PackageVersion[ \t]*:[ \t]*(['\"]?)([^'\"#\r\n]+?)\1[ \t]*(?:#.*)?\r?$", re.MULTILINE
)


class _Skip(Exception):
    """An installer entry is unusable; the message is the one-line reason."""


# --------------------------------------------------------------------------------------------
# Locating packages


def find_package_dirs(root: Path, package_ids: Iterable[str]) -> dict[str, Path]:
    """Map each requested PackageIdentifier (case-insensitive) to its package folder.

    `root` may be a winget-pkgs checkout or its `manifests/` folder. winget-pkgs puts
    "Publisher.Package.Sub" under `<first letter, lowercased>/Publisher/Package/Sub`, so dots
    become nested folders. Ids without a folder holding version folders are left out; the
    caller reports them.
    """
    root = Path(root)
    manifests = root / "manifests" if (root / "manifests").is_dir() else root
    found: dict[str, Path] = {}
    for package_id in package_ids:
        parts = package_id.split(".")
        if len(parts) < 2 or not all(parts):
            continue
        folder: Path | None = _child(manifests, package_id[0].lower())
        for part in parts:
            folder = _child(folder, part) if folder else None
        if folder and _version_dirs(folder):
            found[package_id] = folder
    return found


def _child(folder: Path, name: str) -> Path | None:
    """Case-insensitive lookup, so ids typed in any case still find their folder."""
    exact = folder / name
    if exact.is_dir():
        return exact
    if not folder.is_dir():
        return None
    wanted = name.casefold()
    return next((p for p in folder.iterdir() if p.is_dir() and p.name.casefold() == wanted), None)


def _version_dirs(package_dir: Path) -> list[Path]:
    """Sub-folders holding manifest files; sub-folders of sub-packages hold none directly."""
    return sorted(
        d for d in package_dir.iterdir()
        if d.is_dir() and any(_is_yaml(f) for f in d.iterdir())
    )


def _is_yaml(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in _YAML_SUFFIXES


# --------------------------------------------------------------------------------------------
# Parsing


def parse_package_dir(package_dir: Path, languages: set[str] | None = None) -> ParsedDocument:
    """All versions of one package: one PatchRecord per version, oldest first.

    The newest version supersedes all older ones (see link_versions). The content hash covers
    every manifest file, broken ones included, so fixing a file upstream triggers a re-parse.
    """
    package_dir = Path(package_dir)
    if not package_dir.is_dir():
        raise SourceError(f"{package_dir}: not a directory")
    all_files: dict[str, bytes] = {}
    docs: list[ParsedDocument] = []
    errors: list[str] = []
    for version_dir in _version_dirs(package_dir):
        files = {f.name: f.read_bytes() for f in sorted(version_dir.iterdir()) if _is_yaml(f)}
        all_files.update({f"{version_dir.name}/{name}": data for name, data in files.items()})
        try:
            docs.append(parse_manifest_files(files, languages))
        except SourceError as exc:
            errors.append(str(exc))
    if not docs:
        reason = errors[0] if errors else "no version folders"
        raise SourceError(f"{package_dir.name}: no usable version ({reason})")

    # A copied or misplaced version folder must not pass as this package.
    ids = Counter(doc.patches[0].package_id for doc in docs)
    package_id = ids.most_common(1)[0][0] or package_dir.name
    patches: list[PatchRecord] = []
    for doc in docs:
        errors.extend(doc.errors)
        patch = doc.patches[0]
        if (patch.package_id or "").casefold() != package_id.casefold():
            errors.append(f"{patch.key}: PackageIdentifier differs from {package_id}; skipped")
        else:
            patches.append(patch)
    patches = link_versions(patches)
    return ParsedDocument(
        key=package_id,
        release_date=patches[-1].release_date,
        content_hash=_hash_files(all_files),
        patches=patches,
        errors=errors,
    )


def link_versions(patches: Iterable[PatchRecord]) -> list[PatchRecord]:
    """Sort versions oldest first and let the newest supersede every older one.

    Kept separate from parse_package_dir so an online fetcher that downloads versions one by
    one through parse_manifest_files can link them the same way.
    """
    ordered = sorted(patches, key=lambda p: (version_key(p.version or ""), p.version or ""))
    if len(ordered) < 2:
        return ordered
    newest = ordered[-1]
    older = [dataclasses.replace(p, superseded_by=newest.key) for p in ordered[:-1]]
    return [*older, dataclasses.replace(newest, supersedes=tuple(p.key for p in older))]


def parse_manifest_files(
    files: dict[str, bytes], languages: set[str] | None = None
) -> ParsedDocument:
    """One version from its manifest files (file name -> bytes), as one PatchRecord.

    `languages` filters per-locale installers; installers without InstallerLocale are always
    kept. When the filter would leave a version with no installer at all (PuTTY, Notepad++ and
    older Java manifests tag every installer en-US), the version's installers are kept as
    they are: such a tag names the only build there is, not a language choice, and dropping it
    would hide the product from every non-English site (the winget client, too, treats a
    preferred locale as a preference, not a requirement).
    """
    problems: list[str] = []  # labelled with "<id>@<version>" once that is known
    by_type: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name in sorted(files):
        try:
            data = safe_load(files[name])
        except yaml.YAMLError as exc:
            problems.append(f"{name}: invalid YAML: {_yaml_problem(exc)}")
            continue
        manifest_type = data.get("ManifestType") if isinstance(data, dict) else None
        if not isinstance(manifest_type, str):
            problems.append(f"{name}: not a winget manifest (no ManifestType)")
            continue
        by_type.setdefault(manifest_type.casefold(), []).append((name, data))

    combined = by_type.get("singleton", []) + by_type.get("merged", [])
    installer_m = _first(by_type.get("installer", []) + combined)
    version_m = _first(by_type.get("version", []) + combined)
    if installer_m is None:
        raise _failure(_label(files), "no installer manifest", problems)
    sources = [m for m in (version_m, installer_m) if m is not None]

    package_id = next((m["PackageIdentifier"] for m in sources
                       if isinstance(m.get("PackageIdentifier"), str)), None)
    if not package_id:
        raise _failure(_label(files), "no PackageIdentifier", problems)
    version = _package_version(sources, files)
    if not version:
        raise _failure(package_id, "no PackageVersion", problems)
    label = f"{package_id}@{version}"
    locale_m = _default_locale(by_type, combined, version_m) or {}

    installers: list[InstallerRecord] = []
    entries = installer_m.get("Installers")
    if not isinstance(entries, list):
        raise SourceError(f"{label}: Installers is not a list")
    for index, entry in enumerate(entries, 1):
        try:
            installers.append(_installer(installer_m, entry))
        except _Skip as exc:
            problems.append(f"installer #{index} skipped: {exc}")
    if not installers:
        raise _failure(label, "no usable installer", problems[-1:])
    installers = _filter_languages(installers, languages)

    eula_required, eula_url = _eula(locale_m)
    name = _str(locale_m.get("PackageName")) or package_id
    patch = PatchRecord(
        source="winget",
        key=label,
        title=f"{name} {version}",
        vendor=_str(locale_m.get("Publisher")) or package_id.split(".")[0],
        category="Applications",
        severity="Unspecified",
        restart_required="May Require",
        package_id=package_id,
        version=version,
        release_date=_release_date(installer_m),
        eula_required=eula_required,
        eula_url=eula_url,
        info_url=next((u for k in ("ReleaseNotesUrl", "PackageUrl", "PublisherUrl")
                       if (u := _str(locale_m.get(k)))), None),
        description=_str(locale_m.get("ShortDescription")),
        languages=tuple(sorted({i.locale for i in installers if i.locale})),
        installers=tuple(installers),
    )
    return ParsedDocument(
        key=label,
        release_date=patch.release_date,
        content_hash=_hash_files(files),
        patches=[patch],
        errors=[f"{label}: {problem}" for problem in problems],
    )


def _failure(label: str, message: str, problems: list[str]) -> SourceError:
    """The version is unusable; name the first underlying problem, which is usually the cause."""
    detail = f" ({problems[0]})" if problems else ""
    return SourceError(f"{label}: {message}{detail}")


def _first(manifests: list[tuple[str, dict[str, Any]]]) -> dict[str, Any] | None:
    return manifests[0][1] if manifests else None


def _label(files: dict[str, bytes]) -> str:
    return min(files) if files else "manifest"


def _package_version(sources: list[dict[str, Any]], files: dict[str, bytes]) -> str | None:
    for manifest in sources:
        value = manifest.get("PackageVersion")
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            for data in files.values():
                match = _VERSION_LINE.search(data)
                if match:
                    return match.group(2).decode("utf-8", "replace").strip()
            return str(value)
    return None


def _default_locale(
    by_type: dict[str, list[tuple[str, dict[str, Any]]]],
    combined: list[tuple[str, dict[str, Any]]],
    version_m: dict[str, Any] | None,
) -> dict[str, Any] | None:
    found = _first(by_type.get("defaultlocale", []) + combined)
    if found is not None:
        return found
    wanted = _str((version_m or {}).get("DefaultLocale"))
    locales = by_type.get("locale", [])
    match = [m for _, m in locales if wanted and _str(m.get("PackageLocale")) == wanted]
    return match[0] if match else _first(locales)


def _installer(root: dict[str, Any], entry: Any) -> InstallerRecord:
    if not isinstance(entry, dict):
        raise _Skip(f"entry is a {type(entry).__name__}, not a mapping")

    def field(key: str) -> Any:
        value = entry.get(key)
        return root.get(key) if value is None else value

    url = field("InstallerUrl")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise _Skip(f"InstallerUrl is not an http(s) URL: {_short(url)}")
    sha256 = field("InstallerSha256")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise _Skip(f"InstallerSha256 is not 64 hex characters: {_short(sha256)}")
    kind = _choice(field("InstallerType"), INSTALLER_TYPES, "InstallerType", required=True)
    arch = _choice(field("Architecture"), ARCHES, "Architecture", required=True)
    scope = _choice(field("Scope"), _SCOPES, "Scope", required=False)
    locale = field("InstallerLocale")
    if locale is not None and not isinstance(locale, str):
        raise _Skip(f"InstallerLocale is not text: {_short(locale)}")

    switches: dict[str, Any] = {}
    for level in (root, entry):  # per-switch override, as the winget client merges them
        value = level.get("InstallerSwitches")
        if value is not None and not isinstance(value, dict):
            raise _Skip(f"InstallerSwitches is not a mapping: {_short(value)}")
        switches.update({k: v for k, v in (value or {}).items() if v is not None})
    silent = _str(switches.get("Silent")) or _str(switches.get("SilentWithProgress"))
    custom = _str(switches.get("Custom"))  # winget appends Custom to every install mode
    silent = " ".join(s for s in (silent, custom) if s) or None

    afe_raw = field("AppsAndFeaturesEntries")
    if afe_raw is not None and not (
        isinstance(afe_raw, list) and all(isinstance(e, dict) for e in afe_raw)
    ):
        raise _Skip("AppsAndFeaturesEntries is not a list of mappings")
    afe = tuple(
        {k: _scalar(e[k]) for k in _AFE_KEYS if _scalar(e.get(k))} for e in afe_raw or ()
    )
    product_code = _code(field("ProductCode"), afe, "ProductCode")
    upgrade_code = _code(field("UpgradeCode"), afe, "UpgradeCode")

    return InstallerRecord(
        url=url,
        sha256=sha256.lower(),
        type=kind,
        arch=arch,
        scope=scope,
        locale=(locale.strip() or None) if locale else None,
        silent_switches=silent,
        product_code=product_code,
        upgrade_code=upgrade_code,
        apps_and_features=tuple(e for e in afe if e),
    )


def _choice(value: Any, allowed: tuple[str, ...], name: str, *, required: bool) -> Any:
    if value is None and not required:
        return None
    if not isinstance(value, str) or value.lower() not in allowed:
        raise _Skip(f"unsupported {name}: {_short(value)}")
    return value.lower()


def _code(value: Any, afe: tuple[dict[str, str], ...], key: str) -> str | None:
    """The installer's own code, else the entries' code when they agree on exactly one.

    Firefox lists its browser and its maintenance service in one installer; guessing between
    two codes would make the scan match the wrong program.
    """
    if value is not None:
        if not isinstance(value, (str, int)):
            raise _Skip(f"{key} is not text: {_short(value)}")
        return str(value).strip() or None
    codes = {e[key] for e in afe if key in e}
    return codes.pop() if len(codes) == 1 else None


def _filter_languages(
    installers: list[InstallerRecord], languages: set[str] | None
) -> list[InstallerRecord]:
    """Keep neutral installers and wanted locales ("de" also matches "de-DE")."""
    if not languages:
        return installers
    wanted = {lang.casefold() for lang in languages}

    def keep(locale: str | None) -> bool:
        if locale is None:
            return True
        folded = locale.casefold()
        return folded in wanted or folded.split("-")[0] in wanted

    kept = [i for i in installers if keep(i.locale)]
    return kept or installers


def _eula(locale_m: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether installing means accepting a vendor licence agreement, and where to read it.

    winget-pkgs marks click-through terms with `Agreements`, but many manifests of proprietary
    software (Oracle Java, Adobe Reader) carry only `License: Proprietary` and a licence link.
    So: an Agreements entry, a License naming "proprietary", or a LicenseUrl naming an EULA
    counts; open-source licences (MPL, GPL, LGPL, MIT) do not.
    """
    agreements = locale_m.get("Agreements")
    urls = [a.get("AgreementUrl") for a in agreements if isinstance(a, dict)] \
        if isinstance(agreements, list) else []
    has_agreement = bool(isinstance(agreements, list) and agreements)
    licence = (_str(locale_m.get("License")) or "").casefold()
    licence_url = _str(locale_m.get("LicenseUrl"))
    required = has_agreement or "proprietary" in licence or "eula" in (licence_url or "").casefold()
    url = next((u for u in urls if isinstance(u, str) and u.strip()), None)
    return required, url or (licence_url if required else None)


def _release_date(installer_m: dict[str, Any]) -> dt.date | None:
    candidates = [installer_m.get("ReleaseDate")]
    entries = installer_m.get("Installers")
    if isinstance(entries, list):
        candidates += [e.get("ReleaseDate") for e in entries if isinstance(e, dict)]
    for value in candidates:
        if isinstance(value, dt.datetime):
            return value.date()
        if isinstance(value, dt.date):
            return value
        if isinstance(value, str):
            try:
                return dt.date.fromisoformat(value.strip()[:10])
            except ValueError:
                continue
    return None


def _hash_files(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode("utf-8") + b"\0" + str(len(files[name])).encode() + b"\0")
        digest.update(files[name])
    return digest.hexdigest()


def _str(value: Any) -> str | None:
    return (value.strip() or None) if isinstance(value, str) else None


def _scalar(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int, float)):
        return str(value).strip() or None
    return None


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else value
    text = " ".join(text.split())
    return text if len(text) <= 60 else text[:57] + "..."


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML messages span lines and quote the source; keep the problem and where it is."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        return f"{exc.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(exc).split())[:200]
