"""Several patchflow instances on one machine, for the replication tests and benchmark.

Each instance has its own home (database, secret key, TLS certificate, content store).
`serve()` runs `patchflow serve` as a subprocess on a free loopback port, as an administrator
would; `active()` points this process's `patchflow` commands (the `cli` fixture, flows) at the
instance. Catalog data is seeded through the same store functions the sync uses.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from sources.records import InstallerRecord, PatchRecord, ProductRow
from tests.support.paths import REPO

ROOT = REPO


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Instance:
    name: str
    home: Path
    db_url: str
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    env_extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def cert(self) -> Path:
        return self.home / "tls" / "server.crt"

    @property
    def fingerprint(self) -> str:
        from patchflow.ops import tls

        return tls.fingerprint(self.cert)

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATCHFLOW_HOME": str(self.home),
                "PATCHFLOW_DATABASE_URL": self.db_url, **self.env_extra}

    @contextmanager
    def active(self) -> Iterator[Instance]:
        """This process's patchflow (CLI, flows, config) works on this instance meanwhile."""
        saved = {k: os.environ.get(k) for k in ("PATCHFLOW_HOME", "PATCHFLOW_DATABASE_URL")}
        os.environ["PATCHFLOW_HOME"] = str(self.home)
        os.environ["PATCHFLOW_DATABASE_URL"] = self.db_url
        try:
            yield self
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def client(self, token: str | None = None) -> httpx.Client:
        context = ssl.create_default_context(cafile=str(self.cert))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, verify=context, timeout=60, headers=headers)

    def serve(self) -> Instance:
        self.port = free_port()
        log = (self.home / "serve.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--no-access-log", "--no-scheduler"],
            cwd=ROOT, env=self.env(), stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while True:
            try:
                with self.client() as client:
                    if client.get("/api/v1/health").status_code == 200:
                        return self
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: patchflow serve did not start: "
                                   + (self.home / "serve.log").read_text())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def log(self) -> str:
        path = self.home / "serve.log"
        return path.read_text(errors="replace") if path.exists() else ""


def make_instance(base: Path, name: str, db_url: str | None = None) -> Instance:
    """A fresh home with its database at head and a certificate (`patchflow init`)."""
    from cli.main import main

    home = base / name
    home.mkdir(parents=True)
    instance = Instance(name, home, db_url or f"sqlite:///{home / 'patchflow.db'}")
    with instance.active():
        code = main(["init", "--host", "localhost"])
    if code != 0:
        raise RuntimeError(f"patchflow init failed for {name}")
    return instance


def add_local_server(instance: Instance, name: str = "local") -> None:
    from models.db import session_scope
    from patchflow.catalog import servers

    with instance.active(), session_scope(instance.db_url) as session:
        servers.add_server(session, name, servers.ServerOptions(
            host="localhost", winget_source="none"))


def seed(instance: Instance, records: list[PatchRecord], server: str = "local",
         chunk: int = 2000) -> None:
    """Store records as a sync would, in chunks (one transaction each)."""
    from models.db import session_scope
    from patchflow.catalog import servers
    from patchflow.catalog.catalog_store import store_document
    from sources.filters import Filters
    from sources.records import ParsedDocument

    with instance.active():
        for start in range(0, len(records), chunk):
            with session_scope(instance.db_url) as session:
                server_id = servers.get_server(session, server).id
                doc = ParsedDocument(key=f"seed-{start}", release_date=None, content_hash="",
                                     patches=records[start : start + chunk])
                store_document(session, server_id, doc, Filters())


def payload(n: int) -> bytes:
    return f"installer payload {n}\n".encode() * 50


def make_records(count: int, start: int = 0, base_url: str = "http://127.0.0.1:9") -> \
        list[PatchRecord]:
    """A catalog like a real one: Microsoft KBs (products, CVEs, supersedence chains) and
    third-party versions (installers whose bytes `payload(n)` a file server can serve)."""
    records = []
    for n in range(start, start + count):
        if n % 2 == 0:
            kb = 5_000_000 + n
            supersedes = (f"KB{kb - 2}",) if n >= 2 else ()
            records.append(PatchRecord(
                source="msrc", key=f"KB{kb}", kb=f"KB{kb}",
                title=f"Cumulative Update {n} for Windows 11", vendor="Microsoft",
                category="Security Updates" if n % 4 == 0 else "Critical Updates",
                severity=("Critical", "Important", "Moderate")[n % 3],
                restart_required="Required", release_date=None,
                products=(ProductRow(name="Windows 11 Version 23H2 for x64-based Systems",
                                     fixed_build=f"10.0.22631.{n}",
                                     supersedes=supersedes[0] if supersedes else None,
                                     subtype="Security Update", severity="Important"),
                          ProductRow(name="Windows Server 2022", fixed_build=f"10.0.20348.{n}")),
                cves=(f"CVE-2024-{10000 + n}", f"CVE-2024-{20000 + n}"),
                supersedes=supersedes,
            ))
        else:
            version = f"1.{n}"
            data = payload(n)
            records.append(PatchRecord(
                source="winget", key=f"Example.App{n % 7}@{version}",
                package_id=f"Example.App{n % 7}", version=version,
                title=f"Example App {n % 7} {version}", vendor="Example Corp",
                category="Applications", restart_required="Not Required",
                eula_required=n % 5 == 1,
                installers=(InstallerRecord(
                    url=f"{base_url}/app{n}.msi", sha256=hashlib.sha256(data).hexdigest(),
                    type="msi", arch="x64", scope="machine", locale="en-US",
                    silent_switches="/qn", product_code=f"{{APP-{n}}}",
                    apps_and_features=({"DisplayName": f"Example App {n % 7}"},)),),
            ))
    return records


class FakeUpstream:
    """A scripted HTTPS upstream for answers a real patchflow never gives: garbage, a page cut
    off mid-body, a token refused halfway. `pages[since]` is (status, body); `cut[since]` sends
    only that many bytes of the body, then closes the connection."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.pages: dict[int, tuple[int, bytes]] = {}
        self.cut: dict[int, int] = {}
        self.requests: list[str] = []
        self._cert, self._key = cert, key
        self.url = ""

    @contextmanager
    def running(self) -> Iterator[FakeUpstream]:
        from http.server import BaseHTTPRequestHandler
        from urllib.parse import parse_qs, urlsplit

        from tests.support.httpserver import serving

        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                owner.requests.append(self.path)
                query = parse_qs(urlsplit(self.path).query)
                since = int(query.get("since", ["0"])[0])
                status, body = owner.pages.get(since, (404, b'{"error":"no such page"}'))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = owner.cut.get(since)
                self.wfile.write(body if cut is None else body[:cut])
                self.wfile.flush()
                if cut is not None:
                    self.close_connection = True

        with serving(Handler, (self._cert, self._key)) as self.url:
            yield self


def page_body(records: list[PatchRecord], since: int, latest: int) -> tuple[int, bytes]:
    """A valid replication page holding `records`, revisions since+1, since+2, ..."""
    import dataclasses
    import json

    patches = []
    for n, record in enumerate(records, since + 1):
        item = dataclasses.asdict(record)
        item.pop("superseded_by")
        item["revision"] = n
        item["release_date"] = record.release_date.isoformat() if record.release_date else None
        patches.append(item)
    upper = since + len(records)
    body = {"format": "patchflow-replication/1", "server": "local", "since": since,
            "next": upper, "latest": latest, "more": upper < latest, "patches": patches}
    return 200, json.dumps(body).encode()
