"""Getting a content file (an installer, an update package) into the content store on demand.

The install step, the replication API and `patchflow sync NAME --prefetch` all call
`ensure_content(sha256)`. A file already stored is used as is. Otherwise the catalog says where
it can come from: a patch server replicating another patchflow instance fetches it from that
upstream (which may in turn fetch from its own upstream: a branch office never talks to the
vendor), anything else downloads the vendor URL the catalog holds. Every path ends in
ContentStore, which verifies the SHA-256 before a file is visible.
"""

from __future__ import annotations

import threading
from pathlib import Path

import requests
from sqlalchemy import select

from models import PatchInstaller, PatchServer, ServerPatch
from models.db import session_scope
from patchflow.catalog import servers as server_svc
from patchflow.catalog.content import ContentError, ContentStore, ContentTampered, validate_sha256
from patchflow.crypto import SecretError
from patchflow.errors import NotFoundError
from patchflow.http import make_session
from patchflow.upstreams.replica_client import Upstream
from patchflow.upstreams.wsus_client import wsus_verify
from sources.records import SourceError

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def ensure_content(sha256: str, database_url: str | None = None,
                   server_name: str | None = None, store: ContentStore | None = None) -> Path:
    """The stored file for `sha256`, fetched first if needed.

    Raises NotFoundError when no patch in the catalog has that file, ContentError (one line)
    when every known source failed. `server_name` prefers that patch server's upstream.
    """
    sha = validate_sha256(sha256)
    store = store or ContentStore()
    found = _stored(store, sha)
    if found is not None:
        return found
    with _lock(sha):
        found = _stored(store, sha)
        if found is not None:
            return found
        sources = _sources(sha, database_url, server_name)
        if not sources:
            raise NotFoundError(f"no patch in the catalog has a file with SHA-256 {sha}")
        errors = []
        for fetch in sources:
            try:
                return fetch(store)
            except (ContentError, SourceError) as exc:
                errors.append(str(exc))
        raise ContentError(f"cannot fetch {sha[:12]}…: {errors[0]}")


def _stored(store: ContentStore, sha: str) -> Path | None:
    """The verified file (read from the shared storage when there is one); None when it must
    be fetched: not stored, or a stored copy failed its hash check and was quarantined."""
    try:
        return store.verified_path(sha)
    except ContentTampered:
        return None


def _lock(sha: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(sha, threading.Lock())


def _sources(sha: str, database_url: str | None, prefer: str | None) -> list:  # type: ignore[type-arg]
    """Fetchers in the order to try: replicated upstreams first, then vendor URLs (a WSUS
    server's own, with its TLS settings). Which servers have which is their connectors' say."""
    from patchflow import upstreams as connectors

    with session_scope(database_url) as session:
        urls = list(dict.fromkeys(session.scalars(
            select(PatchInstaller.url).where(PatchInstaller.sha256 == sha))))
        servers = list(session.scalars(
            select(PatchServer).join(ServerPatch, ServerPatch.server_id == PatchServer.id)
            .join(PatchInstaller, PatchInstaller.patch_id == ServerPatch.patch_id)
            .where(PatchInstaller.sha256 == sha).distinct()))
        servers.sort(key=lambda s: (s.name != prefer, s.id))
        upstreams = []
        for server in servers:
            try:
                found = connectors.content_upstream(server)
            except (SourceError, SecretError):
                continue  # unusable settings: the next source is tried
            if found is not None:
                upstreams.append(found)

        proxies = next((server_svc.proxies_of(s) for s in servers if s.proxy_url), None)
        wsus_urls = [url for url in map(connectors.content_host, servers) if url]
    fetchers = []
    for upstream in upstreams:
        fetchers.append(lambda store, u=upstream: _from_upstream(u, sha, store))
    for url in urls:
        if url.startswith(("http://", "https://")):
            from_wsus = any(url.startswith(w + "/") for w in wsus_urls)
            fetchers.append(lambda store, url=url, wsus=from_wsus: _from_url(
                url, sha, store, proxies, wsus_verify() if wsus else True))
    return fetchers


_sessions: dict[tuple[str, str, str], requests.Session] = {}


def _from_upstream(upstream: Upstream, sha: str, store: ContentStore) -> Path:
    """Sessions to upstreams are kept (a few per process): a prefetch or a chain of replicas
    asks the same upstream for thousands of files, and a TLS handshake per file doubles the
    time each takes."""
    key = (upstream.url, upstream.fingerprint, upstream.token)
    with _locks_guard:
        http = _sessions.get(key)
        if http is None:
            if len(_sessions) >= 16:
                _sessions.pop(next(iter(_sessions))).close()
            http = _sessions[key] = upstream.session()
    return upstream.download(http, sha, store)


def _from_url(url: str, sha: str, store: ContentStore, proxies: dict[str, str] | None,
              verify: bool | str) -> Path:
    with make_session(proxies=proxies, verify=verify) as http:
        if verify is not True:
            http.trust_env = False  # else REQUESTS_CA_BUNDLE would replace the WSUS CA file
        return store.download(url, sha, http)


def fetch_content(sha256: str, server_name: str | None = None) -> Path:
    """For the install step: the content file with this SHA-256, from the store or fetched
    now through `server_name`'s upstream (or the vendor)."""
    return ensure_content(sha256, server_name=server_name)


def missing_content(server_id: int, database_url: str | None = None) -> list[str]:
    """SHA-256 of the installers of the patches a server offers that are not stored yet."""
    store = ContentStore()
    with session_scope(database_url) as session:
        shas = session.scalars(
            select(PatchInstaller.sha256).join(
                ServerPatch, ServerPatch.patch_id == PatchInstaller.patch_id)
            .where(ServerPatch.server_id == server_id).distinct())
        return sorted(s for s in shas if not store.has(s))


def prefetch(server_id: int, shas: list[str]) -> tuple[int, list[str]]:
    """Fetch each file ahead of installs; returns (fetched, one-line errors)."""
    with session_scope() as session:
        server = session.get(PatchServer, server_id)
        name = server.name if server else None
    fetched, errors = 0, []
    for sha in shas:
        try:
            ensure_content(sha, server_name=name)
            fetched += 1
        except (ContentError, NotFoundError) as exc:
            errors.append(str(exc))
    return fetched, errors
