"""Third-party packages from winget (the online source or a winget-pkgs mirror folder): the
companion of the Microsoft and WSUS upstreams, filtered by the patch server's filters. A
replica gets its third-party patches from its upstream instead.

One package (all its versions) is one document, stored in its own transaction.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import requests

from models import PatchServer
from models.db import session_scope
from patchflow.catalog import servers as server_svc
from patchflow.catalog import syncing
from patchflow.errors import UserError
from patchflow.upstreams.base import ConnectorBase, Log
from sources import winget
from sources.records import ParsedDocument, SourceError

SOURCE = "winget"
DEFAULT_SOURCE = "https://cdn.winget.microsoft.com/cache"


def plan(source: str, packages: list[str]) -> list[str]:
    """The packages to read: none when the source is switched off."""
    return [] if source == "none" else list(packages)


def fetch_and_parse(http: requests.Session, source: str, package_id: str,
                    folders: dict[str, Path]) -> ParsedDocument:
    """One package as a document: downloaded and parsed by sources.winget_online, or parsed
    from the mirror folder by sources.winget."""
    if source.startswith(("http://", "https://")):
        return _fetch_online(http, source, package_id)
    if package_id in folders:
        return winget.parse_package_dir(folders[package_id])
    raise SourceError(f"{package_id}: not found in {source}")


def _fetch_online(http: requests.Session, source: str, package_id: str) -> ParsedDocument:
    try:
        from sources import winget_online
    except ImportError:
        raise SourceError(
            f"{package_id}: online winget source not available in this build; "
            "use --winget-source with a winget-pkgs mirror folder"
        ) from None
    return winget_online.fetch_package(http, source, package_id)


class WingetConnector(ConnectorBase):
    kind = SOURCE
    label = "winget"
    task_name = "sync-winget-batch"
    companion = True

    def defaults(self, server: PatchServer) -> None:
        server.winget_source = DEFAULT_SOURCE
        server.winget_packages = json.dumps(list(winget.DEFAULT_PACKAGES))

    def apply(self, server: PatchServer, opts: Any) -> None:
        """`--winget-source` (a URL, a winget-pkgs mirror folder or none) and the packages."""
        if opts.winget_source is not None:
            server.winget_source = server_svc.validate_source(opts.winget_source,
                                                              "winget source", True)
        if opts.winget_packages is not None:
            packages = [p.strip() for p in opts.winget_packages if p.strip()]
            if not packages:
                raise UserError("--winget-packages needs at least one PackageIdentifier")
            server.winget_packages = json.dumps(packages)

    def selected(self, server: PatchServer) -> bool:
        return False  # a companion: it runs when the upstream brings no third-party patches

    def sync_batch(self, server_id: int, refs: list[dict[str, Any]] | None, done_before: int,
                   total: int, log: Log) -> dict[str, Any]:
        """All configured packages; one package (all its versions) per transaction."""
        result = syncing.BatchResult()
        with session_scope() as session:
            server = syncing.server_row(session, server_id)
            source = server.winget_source or DEFAULT_SOURCE
            packages = plan(source, json.loads(server.winget_packages or "[]"))
            filters, http = syncing.filters_of(server), syncing.http_for(server)
        if not packages:
            return asdict(result)
        folders: dict[str, Path] = {}
        if not source.startswith(("http://", "https://")):
            if not Path(source).is_dir():
                syncing.fail(server_id, SOURCE, "*",
                             f"winget source folder {source} does not exist", result)
                return asdict(result)
            folders = winget.find_package_dirs(Path(source), packages)
        for n, package_id in enumerate(packages, 1):
            try:
                syncing.progress(server_id, f"winget package {n}/{len(packages)}: {package_id}")
            except syncing.SyncStopped:
                result.stopped = True
                break
            try:
                doc = fetch_and_parse(http, source, package_id, folders)
            except SourceError as exc:
                log.warning("winget %s failed: %s", package_id, exc)
                syncing.fail(server_id, SOURCE, package_id, str(exc), result)
                continue
            syncing.store(server_id, SOURCE, doc, filters, result)
            log.info("winget %s: %d versions", package_id, len(doc.patches))
        return asdict(result)


CONNECTOR = WingetConnector()
