"""`patchflow serve`: the HTTPS server and the scheduled deployments in one process; the
service itself is deployments/serve.py, this module only reads the port and checks it."""

from __future__ import annotations

import typer

from patchflow.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on"),
    port: int = typer.Option(None, "--port", help="Port (default: [server] port or 6201)"),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes"),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log",
                                    help="Log every request"),
    scheduler: bool = typer.Option(
        True, "--scheduler/--no-scheduler",
        help="Also run the Prefect runner serving the scheduled deployments (sync, scan, "
        "report); --no-scheduler serves the HTTPS API only"),
    prefect_port: int = typer.Option(
        None, "--prefect-port",
        help="Loopback port of the local Prefect server started when PREFECT_API_URL is not "
        "set (default: [prefect] port or 4200)"),
) -> None:
    """Run the HTTPS server (agent API, admin API, /docs) and the scheduled deployments until
    interrupted. Without PREFECT_API_URL a local Prefect server (with its UI) runs alongside."""
    from deployments.serve import serve as run_service
    from patchflow import config
    from patchflow.ops.setup import DEFAULT_SSL_PORT

    port = port or int(config.setting("server", "port", DEFAULT_SSL_PORT))
    if not 1 <= port <= 65535:
        raise UserError(f"invalid port {port}: must be between 1 and 65535")
    code = run_service(host, port, workers=workers, access_log=access_log, scheduler=scheduler,
                       prefect_port=prefect_port)
    if code:
        raise typer.Exit(code)
