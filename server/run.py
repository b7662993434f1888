"""Running the app over HTTPS with uvicorn: `patchflow serve` in the foreground, and a background
server on a loopback port for tests and the demo (same app, same TLS, a real socket)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from patchflow.errors import UserError
from patchflow.ops import tls


def certificate_pair() -> tuple[Path, Path]:
    cert, key = tls.cert_paths()
    for path, what in ((cert, "certificate"), (key, "key")):
        if not path.is_file():
            raise UserError(f"no TLS {what} at {path}: run `patchflow init` (or set --cert/--key)")
    return cert, key


def listening_socket(host: str, port: int) -> socket.socket:
    """The listening socket, made here rather than by uvicorn: uvicorn's own (for --workers)
    is created without IPPROTO_TCP, so asyncio does not set TCP_NODELAY on the connections it
    accepts, and every response then waits ~40 ms for a delayed ACK. Binding here also turns a
    busy port into one line instead of a log record and exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


@dataclass
class PreparedServer:
    """Everything checked and the port bound, but nothing served yet: `patchflow serve` starts
    Prefect only after the HTTPS side is known to be able to run (bad config, missing
    certificate or a busy port fail first, in one line)."""

    config: uvicorn.Config
    sock: socket.socket
    host: str
    port: int
    workers: int


def prepare(
    host: str, port: int, workers: int = 1, access_log: bool = True, log_level: str = "info"
) -> PreparedServer:
    from models.migrate import ensure_current
    from server.settings import ServerSettings

    cert, key = certificate_pair()
    ServerSettings.from_config()  # refuse a bad patchflow.toml before binding the port
    ensure_current()
    config = uvicorn.Config(
        "server.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
        access_log=access_log,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
    )
    return PreparedServer(config, listening_socket(host, port), host, port, workers)


def run_prepared(prepared: PreparedServer) -> None:
    """Blocks until interrupted. Several workers share the port (separate processes)."""
    host, port, workers, sock = prepared.host, prepared.port, prepared.workers, prepared.sock
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("uvicorn.error").info(
        "patchflow serving https://%s:%d with %d worker(s) (Ctrl+C to stop)", shown, port,
        workers,
    )
    try:
        if workers > 1:
            from uvicorn.supervisors import Multiprocess

            Multiprocess(prepared.config, sockets=[sock]).run()
        else:
            uvicorn.Server(prepared.config).run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()


def serve(
    host: str, port: int, workers: int = 1, access_log: bool = True, log_level: str = "info"
) -> None:
    """Blocks until interrupted. Several workers share the port (separate processes)."""
    run_prepared(prepare(host, port, workers, access_log, log_level))


class BackgroundServer:
    """The app served over HTTPS from a thread on 127.0.0.1 (port 0 = any free port)."""

    def __init__(self, app: FastAPI, cert: Path, key: Path, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self._sock = listening_socket(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        # As in `serve`: the app alone decides whether X-Forwarded-For counts (trusted_proxies).
        config = uvicorn.Config(app, ssl_certfile=str(cert), ssl_keyfile=str(key),
                                log_level="warning", lifespan="on", access_log=False,
                                proxy_headers=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background HTTPS server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
