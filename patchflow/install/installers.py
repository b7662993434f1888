"""Which installer of a patch an endpoint gets (pure).

A package can have several installers (x64 and x86, machine and user scope, one per language).
The endpoint gets the one for the architecture of the program being updated, not merely of its
OS: a 32-bit 7-Zip on 64-bit Windows is updated with the 32-bit installer, or the update would
install a second copy beside it. The scan's reason names that architecture ("7-Zip 24.08 (x86)
< 25.01"); without one, the OS architecture decides. Then machine scope (the agent runs as
SYSTEM), then the endpoint's language, then the server's languages, then the catalog's order.

A Microsoft update without a file in the catalog is installed through the Windows Update Agent
on the endpoint (installer type `wua`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

WUA = "wua"
_REASON_ARCH = re.compile(r"\((x64|x86|arm64)\) <")
_NEUTRAL = {"", "neutral", "none"}


class InstallerRow(Protocol):
    """What is read from a catalog installer (models.PatchInstaller has these attributes)."""

    id: int | None
    url: str
    sha256: str
    type: str
    arch: str
    scope: str | None
    locale: str | None
    silent_switches: str | None


@dataclass(frozen=True)
class Choice:
    """The installer an item will use; `url` is the vendor's (the catalog's) URL and
    `installer_id` the catalog row, kept on the item: a manifest may list one file (one
    SHA-256) under two architectures, so the hash alone does not say which row was chosen."""

    type: str
    url: str | None = None
    sha256: str | None = None
    switches: str | None = None
    installer_id: int | None = None

    @property
    def file_name(self) -> str | None:
        return file_name_of(self.url) if self.url else None


def file_name_of(url: str) -> str:
    """The vendor's file name ("Firefox Setup 145.0 en-US x64.exe"), which installers such as
    wusa and msiexec need as an extension, and which people recognise in logs."""
    name = unquote(PurePosixPath(urlsplit(url).path).name)
    return name or "installer.bin"


def program_arch(reason: str | None) -> str | None:
    """The architecture the scan matched ("… (x86) < 25.01"), if its reason names one."""
    found = _REASON_ARCH.findall(reason or "")
    return found[0] if len(set(found)) == 1 else None


def _arch_ok(installer_arch: str | None, wanted: str) -> bool:
    arch = (installer_arch or "").strip().lower()
    return arch in _NEUTRAL or arch == wanted


def _language_rank(locale: str | None, language: str | None,
                   server_languages: Sequence[str] | None) -> int:
    if not locale:
        return 2  # language neutral
    tag = locale.casefold()
    if language:
        wanted = language.casefold()
        if tag == wanted:
            return 0
        if tag.split("-")[0] == wanted.split("-")[0]:
            return 1
    if server_languages and tag in {s.casefold() for s in server_languages}:
        return 3
    return 4


def choose(
    installers: Iterable[InstallerRow],
    *,
    is_microsoft: bool,
    os_arch: str | None,
    language: str | None,
    reason: str | None = None,
    server_languages: Sequence[str] | None = None,
) -> tuple[Choice | None, str | None]:
    """(choice, None), or (None, one-line reason why the endpoint cannot get this patch)."""
    rows = list(installers)
    if is_microsoft and not rows:
        return Choice(WUA), None
    wanted = (program_arch(reason) if not is_microsoft else None) or (os_arch or "x64").lower()
    fitting = [row for row in rows if _arch_ok(row.arch, wanted)]
    if not fitting:
        have = ", ".join(sorted({(r.arch or "neutral") for r in rows})) or "none"
        return None, f"no {wanted} installer in the catalog for this patch (has: {have})"
    ranked = sorted(
        enumerate(fitting),
        key=lambda pair: (
            (pair[1].scope or "machine").lower() != "machine",
            _language_rank(pair[1].locale, language, server_languages),
            pair[0],
        ),
    )
    best = ranked[0][1]
    return Choice(best.type.lower(), best.url, best.sha256.lower(), best.silent_switches,
                  best.id), None


class Installers:
    """Catalog installer rows (id, patch_id, sha256, url, ...; in id order), found for an item
    (installer_id, patch_id, content_sha256) by the id chosen for it: agent polls and the
    content plan. (patch, SHA-256) is only the fallback for items resolved before that id was
    kept, or whose catalog row a later sync replaced: one file listed under two architectures
    makes it ambiguous, and the first such row is taken."""

    def __init__(self, rows: list[Any]) -> None:
        self.by_id = {r.id: r for r in rows}
        self.by_hash: dict[tuple[int, str], Any] = {}
        for r in rows:
            self.by_hash.setdefault((r.patch_id, r.sha256.lower()), r)

    def of(self, item: Any) -> Any | None:
        chosen = self.by_id.get(item.installer_id) if item.installer_id is not None else None
        if chosen is not None and chosen.patch_id == item.patch_id:
            return chosen
        return self.by_hash.get((item.patch_id, (item.content_sha256 or "").lower()))
