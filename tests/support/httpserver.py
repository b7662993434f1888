"""A real HTTP server on loopback serving files from a dict, with Range support and faults.

Used by the content store and sync tests: they must talk to a real server, not a mock.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class LoopbackServer(ThreadingHTTPServer):
    """A client that hangs up mid-answer (a stopped sync, a cancelled download) is normal here:
    say nothing, instead of printing a traceback into whichever test's output is captured when
    the handler thread notices."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler],
            tls: tuple[str | Path, str | Path] | None = None) -> Iterator[str]:
    """A LoopbackServer answering with `handler` in a daemon thread until the block ends (HTTPS
    with the certificate and key files `tls`); yields its base URL."""
    httpd = LoopbackServer(("127.0.0.1", 0), handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        scheme = "https"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"{scheme}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class FileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.fail_after: dict[str, int] = {}  # path -> bytes sent before dropping the connection
        self.status: dict[str, int] = {}  # path -> forced status code
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.delay = 0.0  # seconds to wait before answering, to test stopping mid-sync
        self.url = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                owner.requests.append((self.path, dict(self.headers.items())))
                if owner.delay:
                    time.sleep(owner.delay)
                if path in owner.status:
                    self.send_response(owner.status[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = owner.files.get(path)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                range_header = self.headers.get("Range")
                if range_header and range_header.startswith("bytes="):
                    start = int(range_header[6:].split("-")[0])
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                cut = owner.fail_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)

        return Handler


@contextmanager
def serve_files() -> Iterator[FileServer]:
    state = FileServer()
    with serving(state.handler()) as state.url:
        yield state


@contextmanager
def authenticated_proxy(user: str, password: str) -> Iterator[dict[str, object]]:
    """A forward HTTP proxy on loopback that demands Basic proxy authentication."""
    import base64
    import urllib.request

    expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    state: dict[str, object] = {"url": "", "seen": 0, "refused": 0}

    class Proxy(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.headers.get("Proxy-Authorization") != expected:
                state["refused"] = int(state["refused"]) + 1  # type: ignore[call-overload]
                self.send_response(407)
                self.send_header("Proxy-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            state["seen"] = int(state["seen"]) + 1  # type: ignore[call-overload]
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            try:
                with opener.open(self.path, timeout=10) as upstream:
                    body = upstream.read()
                    status = upstream.status
            except urllib.error.HTTPError as exc:
                body, status = b"", exc.code
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serving(Proxy) as url:
        state["url"] = url
        yield state
