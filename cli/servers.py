"""`patchflow server ...`: add, edit, list, delete patch servers, their filters and schedules."""

from __future__ import annotations

import os

import typer

from cli.common import console, db_session, plain, print_json, print_table, split_csv
from patchflow import upstreams
from patchflow.catalog import servers as svc

server_app = typer.Typer(help="Patch servers: where endpoints scan against and download from.")


def register(app: typer.Typer) -> None:
    app.add_typer(server_app, name="server")


def _options(
    host: str | None,
    port: int | None,
    upstream: str | None,
    wsus_url: str | None,
    msrc_source: str | None,
    winget_source: str | None,
    winget_packages: str | None,
    proxy: str | None,
    proxy_user: str | None,
    upstream_server: str | None = None,
    upstream_token: str | None = None,
    upstream_fingerprint: str | None = None,
) -> svc.ServerOptions:
    password = None
    if proxy_user:
        password = os.environ.get("PATCHFLOW_PROXY_PASSWORD")
        if password is None:
            password = typer.prompt(f"Proxy password for {proxy_user}", hide_input=True)
    opts = svc.ServerOptions(
        host=host,
        port=port,
        upstream=upstream,
        wsus_url=wsus_url,
        msrc_source=msrc_source,
        winget_source=winget_source,
        winget_packages=split_csv(winget_packages),
        proxy=proxy,
        proxy_user=proxy_user,
        proxy_password=password,
        upstream_server=upstream_server,
        upstream_token=upstream_token or None,
        upstream_fingerprint=upstream_fingerprint,
    )
    _from_environment(opts)
    return opts


def _from_environment(opts: svc.ServerOptions) -> None:
    """The secrets the chosen upstream lets come from the environment (`ps` shows a command
    line), when the option was not given."""
    choice = upstreams.choice_of(opts.upstream) if opts.upstream else None
    for name, variable in choice.env if choice else ():
        if not getattr(opts, name):
            setattr(opts, name, os.environ.get(variable))


HOST = typer.Option(None, "--host", help="Public host name or IP endpoints use")
PORT = typer.Option(None, "--port", help="SSL port (default 6201)")
UPSTREAM = typer.Option(None, "--upstream", help=upstreams.forms(hints=True))
UP_SERVER = typer.Option(None, "--upstream-server",
                         help="For https:// upstreams: its patch server (default: its first)")
UP_TOKEN = typer.Option(None, "--upstream-token", help="For https:// upstreams: a replication "
                        "token from it (or PATCHFLOW_UPSTREAM_TOKEN); stored encrypted")
UP_FINGERPRINT = typer.Option(None, "--upstream-fingerprint", help="For https:// upstreams: "
                              "its certificate's SHA-256 (`patchflow tls fingerprint` there)")
WSUS_URL = typer.Option(None, "--wsus-url", help="WSUS server URL for --upstream wsus")
MSRC = typer.Option(None, "--msrc-source", help="MSRC CVRF API URL, a folder of documents, "
                    "or a wsusscn2.cab (or its extracted folder)")
WINGET = typer.Option(
    None, "--winget-source", help="winget source URL, a winget-pkgs folder, or none"
)
PACKAGES = typer.Option(None, "--winget-packages", help="Comma-separated PackageIdentifiers")
PROXY = typer.Option(None, "--proxy", help="http://host:port")
PROXY_USER = typer.Option(
    None, "--proxy-user", help="Proxy user; password from PATCHFLOW_PROXY_PASSWORD or a prompt"
)


@server_app.command("add")
def add(
    name: str,
    host: str = HOST,
    port: int = PORT,
    upstream: str = UPSTREAM,
    wsus_url: str = WSUS_URL,
    msrc_source: str = MSRC,
    winget_source: str = WINGET,
    winget_packages: str = PACKAGES,
    proxy: str = PROXY,
    proxy_user: str = PROXY_USER,
    upstream_server: str = UP_SERVER,
    upstream_token: str = UP_TOKEN,
    upstream_fingerprint: str = UP_FINGERPRINT,
) -> None:
    """Add a patch server."""
    opts = _options(host, port, upstream, wsus_url, msrc_source, winget_source, winget_packages,
                    proxy, proxy_user, upstream_server, upstream_token, upstream_fingerprint)
    with db_session() as session:
        server = svc.add_server(session, name, opts)
        console.print(f"added patch server {server.name} ({server.host}:{server.port})")


@server_app.command("edit")
def edit(
    name: str,
    host: str = HOST,
    port: int = PORT,
    upstream: str = UPSTREAM,
    wsus_url: str = WSUS_URL,
    msrc_source: str = MSRC,
    winget_source: str = WINGET,
    winget_packages: str = PACKAGES,
    proxy: str = PROXY,
    proxy_user: str = PROXY_USER,
    upstream_server: str = UP_SERVER,
    upstream_token: str = UP_TOKEN,
    upstream_fingerprint: str = UP_FINGERPRINT,
) -> None:
    """Change a patch server's settings (only the options given)."""
    opts = _options(host, port, upstream, wsus_url, msrc_source, winget_source, winget_packages,
                    proxy, proxy_user, upstream_server, upstream_token, upstream_fingerprint)
    with db_session() as session:
        svc.edit_server(session, name, opts)
        console.print(f"updated patch server {name}")


@server_app.command("list")
def list_(
    sort: str = typer.Option("name", "--sort", help="name | host | status"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """List patch servers with their sync status."""
    with db_session() as session:
        rows = [svc.server_to_dict(session, s) for s in svc.list_servers(session, sort)]
    if as_json:
        print_json(rows)
        return
    print_table(
        "Patch servers",
        ["Name", "Host", "Port", "Upstream", "Patches", "Sync status", "At", "Message"],
        [
            [r["name"], r["host"], r["port"], r["upstream"], r["patches"], r["sync_status"],
             (r["sync_status_at"] or "")[:19], r["sync_message"] or ""]
            for r in rows
        ],
    )


@server_app.command("delete")
def delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", help="Confirm deletion"),
) -> None:
    """Delete a patch server (its synced catalog entries go with it)."""
    if not yes:
        from patchflow.errors import UserError

        raise UserError(f"deleting patch server {name!r} needs --yes")
    from patchflow.ops import audit

    with db_session() as session:
        svc.delete_server(session, name)
        audit.record(session, audit.cli_actor(), "server.delete", name, source="cli")
    console.print(f"deleted patch server {name}")


@server_app.command("filters")
def filters(
    name: str,
    categories: str = typer.Option(None, "--categories", help='"Security Updates,..." or all'),
    languages: str = typer.Option(None, "--languages", help="en-US,de-DE or all"),
    products: str = typer.Option(None, "--products", help='"Windows 11 ...,7-Zip" or all'),
) -> None:
    """Show or set the categories, languages and products a patch server syncs."""
    with db_session() as session:
        server = svc.set_filters(session, name, categories, languages, products)
        current = svc.filters_of(server)
    for key, value in current.items():
        console.print(f"{key}: {'All' if value is None else plain(', '.join(value))}")


@server_app.command("schedule")
def schedule(
    name: str,
    frequency: str = typer.Option(..., "--frequency", help="weekly | monthly"),
    weekday: str = typer.Option(..., "--weekday", help="monday ... sunday"),
    at: str = typer.Option(..., "--at", help="HH:MM (24-hour)"),
    week_of_month: int = typer.Option(None, "--week-of-month", help="1-5 for monthly"),
) -> None:
    """Set when a patch server syncs."""
    with db_session() as session:
        svc.set_schedule(session, name, frequency, weekday, at, week_of_month)
    console.print(f"schedule of {name}: {frequency} on {weekday} at {at}"
                  + (f", week {week_of_month} of the month" if week_of_month else ""))
