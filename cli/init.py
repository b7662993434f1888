"""`patchflow init`: create the home, upgrade the database, generate what the server needs, and
(as a wizard in a terminal, or from flags / `--config FILE`) set up the local patch server.

Run in a terminal without options, it asks: content folder, database (embedded SQLite or a
MySQL/MariaDB URL, connected to right away), proxy (host, port, optional authentication),
upstream (Microsoft or a WSUS URL), public host name or IP and SSL port, and whether to import
patch server data from a backup. Every answer is checked as it is given; a summary is shown and
nothing is written until it is confirmed. Scripts give the same answers as options or in a TOML
file; `patchflow init` with no options outside a terminal does what it always did (home,
config, schema, certificate), so existing scripts keep working.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from cli.common import console, print_table
from patchflow import upstreams
from patchflow.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("init")(init)


# Annotated options keep real Python defaults, so `init(host=...)` also works as a function
# (the demo calls it that way).
def init(
    database_url: Annotated[str | None, typer.Option(
        "--database-url", help="mysql+pymysql://user:pass@host/patchflow (default: SQLite)"
    )] = None,
    host: Annotated[str | None, typer.Option(
        "--host", help="Public host name or IP of this server")] = None,
    port: Annotated[int | None, typer.Option(
        "--port", help="SSL port endpoints connect to (default 6201)")] = None,
    cert: Annotated[str | None, typer.Option(
        "--cert", help="Use this TLS certificate (PEM) instead")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Private key of --cert (PEM)")] = None,
    content_dir: Annotated[str | None, typer.Option(
        "--content-dir", help="Where installers and update files are stored "
        "(default PATCHFLOW_HOME/content)")] = None,
    proxy: Annotated[str | None, typer.Option(
        "--proxy", help="Proxy for downloads: http://host:port")] = None,
    proxy_user: Annotated[str | None, typer.Option(
        "--proxy-user", help="Proxy user; the password comes from PATCHFLOW_PROXY_PASSWORD "
        "and is stored encrypted")] = None,
    upstream: Annotated[str | None, typer.Option(
        "--upstream",
        help=f"{upstreams.forms(wizard=True)} (for the local patch server)")] = None,
    wsus_url: Annotated[str | None, typer.Option(
        "--wsus-url", help="WSUS server URL for --upstream wsus")] = None,
    import_backup: Annotated[Path | None, typer.Option(
        "--import", help="Import patch server data from a backup (`patchflow backup`) into "
        "the new, empty database")] = None,
    config_file: Annotated[Path | None, typer.Option(
        "--config", help="Take the answers from this TOML file (see docs/operations.md)")] = None,
    wizard: Annotated[bool | None, typer.Option(
        "--wizard/--no-wizard", help="Ask the questions (default: when run in a terminal "
        "without options)")] = None,
    as_json: Annotated[bool, typer.Option(
        "--json", help="No wizard; print what was done as one JSON object")] = False,
) -> None:
    """Create PATCHFLOW_HOME, write patchflow.toml and upgrade the database. Safe to run twice.
    In a terminal without options it is a setup wizard."""
    import patchflow.ops.tls  # noqa: F401  registers the TLS certificate init hook
    from patchflow.ops import setup

    given = [database_url, host, port, cert, key, content_dir, proxy, proxy_user, upstream,
             wsus_url, import_backup, config_file]
    if wizard and as_json:
        raise UserError("--json runs without the wizard: give the answers as options or --config")
    if wizard is None:
        wizard = not as_json and not any(v is not None for v in given) and _interactive()
    plan = setup.plan_from_file(str(config_file)) if config_file else setup.SetupPlan()
    _apply_flags(plan, database_url, host, port, cert, key, content_dir, proxy, proxy_user,
                 upstream, wsus_url, import_backup)
    if wizard:
        if not _run_wizard(plan):
            console.print("nothing written")
            raise typer.Exit(1)
        plan.create_server = True
    else:
        plan.check()
    lines = list(plan.apply())
    if as_json:
        from cli.common import print_json
        from patchflow import config

        print_json({"home": str(config.home()), "steps": lines})
        return
    for line in lines:
        console.print(line, highlight=False)


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _apply_flags(plan: Any, database_url: str | None, host: str | None, port: int | None,
                 cert: str | None, key: str | None, content_dir: str | None, proxy: str | None,
                 proxy_user: str | None, upstream: str | None, wsus_url: str | None,
                 import_backup: Path | None) -> None:
    """Options override the --config file; those that describe the local patch server also
    make init create (or update) it."""
    for name, value in (("database_url", database_url), ("host", host), ("port", port),
                        ("cert", cert), ("key", key), ("content_dir", content_dir),
                        ("upstream", upstream), ("wsus_url", wsus_url)):
        if value is not None:
            setattr(plan, name, value)
    if proxy is not None:
        plan.proxy_host, plan.proxy_port = _split_proxy(proxy)
    if proxy_user is not None:
        plan.proxy_user = proxy_user
        plan.proxy_password = os.environ.get("PATCHFLOW_PROXY_PASSWORD")
    if import_backup is not None:
        plan.import_backup = str(import_backup)
    if any(v is not None for v in (proxy, proxy_user, upstream, wsus_url, import_backup)):
        plan.create_server = True


def _split_proxy(value: str) -> tuple[str, int]:
    parts = urlsplit(value if "://" in value else f"http://{value}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise UserError(f"invalid proxy {value!r}: expected http://host:port")
    return parts.hostname, port


# --- the wizard -----------------------------------------------------------------------------


class _EndOfInput(Exception):
    """stdin closed before the questions were answered."""


def _read(ask: Callable[[], Any]) -> Any:
    try:
        return ask()
    except EOFError:
        raise _EndOfInput from None


def _ask(question: str, default: str | None, check: Callable[[str], Any] | None = None,
         show_default: bool = True) -> str:
    """Ask until the answer passes `check`; a failed check prints its one-line reason."""
    from rich.prompt import Prompt

    while True:
        answer = _read(lambda: Prompt.ask(question, default=default, console=console,
                                          show_default=show_default))
        answer = (answer or "").strip()
        if not answer:
            console.print("[red]an answer is needed[/red]")
            continue
        try:
            if check:
                check(answer)
        except Exception as exc:  # UserError, DatabaseError: show and ask again
            console.print(f"[red]{exc}[/red]", highlight=False)
            continue
        return answer


def _ask_int(question: str, default: int, check: Callable[[int], Any]) -> int:
    from rich.prompt import IntPrompt

    while True:
        value = _read(lambda: IntPrompt.ask(question, default=default, console=console))
        try:
            check(value)
        except UserError as exc:
            console.print(f"[red]{exc}[/red]", highlight=False)
            continue
        return int(value)


def _confirm(question: str, default: bool) -> bool:
    from rich.prompt import Confirm

    return bool(_read(lambda: Confirm.ask(question, default=default, console=console)))


def _choose(question: str, choices: list[str], default: str) -> str:
    from rich.prompt import Prompt

    return str(_read(lambda: Prompt.ask(question, choices=choices, default=default,
                                        console=console)))


def _secret(question: str) -> str:
    """Hidden in a terminal; read as a line otherwise (tests, `printf ... | patchflow init
    --wizard`), where getpass would open the controlling terminal instead of stdin."""
    from rich.prompt import Prompt

    while True:
        if sys.stdin.isatty():
            value = _read(lambda: Prompt.ask(question, password=True, console=console))
        else:
            console.print(f"{question}: ", end="")
            line = sys.stdin.readline()
            if not line:
                raise _EndOfInput
            value = line.rstrip("\r\n")
        if value:
            return str(value)
        console.print("[red]an answer is needed[/red]")


def _run_wizard(plan: Any) -> bool:
    """Fill `plan` from the answers; True when the summary was confirmed."""
    try:
        return _questions(plan)
    except _EndOfInput:
        console.print()
        console.print("[red]input ended before the setup was confirmed[/red]")
        return False


def _questions(plan: Any) -> bool:
    from patchflow import config
    from patchflow.ops import setup

    console.rule("patchflow setup")
    console.print("Press Enter to take the value in brackets. Nothing is written until you "
                  "confirm the summary at the end.", highlight=False)

    plan.content_dir = _ask("Content folder (installers and update files)",
                            plan.content_dir or str(config.content_dir()),
                            setup.check_content_dir)

    configured = plan.database_url or config.database_url()
    external = not configured.startswith("sqlite")
    kind = _choose("Database: embedded SQLite or MySQL/MariaDB", ["sqlite", "mysql"],
                   "mysql" if external else "sqlite")
    if kind == "mysql":
        console.print("The URL looks like mysql+pymysql://user:password@host:3306/patchflow; "
                      "the connection is tested now.", highlight=False)
        answer = _ask("MySQL/MariaDB URL" + (f" (Enter keeps {setup.redacted_url(configured)})"
                                             if external else ""),
                      configured if external else None, setup.check_database,
                      show_default=False)
        plan.database_url = answer
    else:
        plan.database_url = None if not external else f"sqlite:///{config.home()/'patchflow.db'}"

    if _confirm("Use a proxy server for downloads?", plan.proxy_host is not None):
        plan.proxy_host = _ask("Proxy host", plan.proxy_host,
                               lambda v: setup.check_host(v, "proxy host"))
        plan.proxy_port = _ask_int("Proxy port", plan.proxy_port or 8080,
                                   lambda v: setup.check_port(v, "proxy port"))
        if _confirm("Does the proxy require authentication?", bool(plan.proxy_user)):
            plan.proxy_user = _ask("Proxy user", plan.proxy_user)
            plan.proxy_password = _secret("Proxy password (stored encrypted)")
        else:
            plan.proxy_user = plan.proxy_password = None
    else:
        plan.proxy_host = plan.proxy_port = plan.proxy_user = plan.proxy_password = None

    offered = upstreams.choices(wizard=True)
    plan.upstream = _choose("Upstream: " + " or ".join(c.label for c in offered),
                            [c.key for c in offered], plan.upstream or offered[0].key)
    choice = setup.wizard_upstream(plan.upstream)
    if choice is not None and "wsus_url" in choice.settings:
        plan.wsus_url = _ask("WSUS server URL", plan.wsus_url or "https://wsus:8531",
                             lambda v: setup.check_url(v, "WSUS URL"))
    else:
        plan.wsus_url = None

    plan.host = _ask("Public host name or IP address endpoints connect to",
                     plan.host or setup._current_host(),
                     lambda v: setup.check_host(v, "host"))
    plan.port = _ask_int("SSL port", plan.port or int(config.setting(
        "server", "port", setup.DEFAULT_SSL_PORT)), lambda v: setup.check_port(v, "SSL port"))

    if _confirm("Import patch server data from a backup file?", bool(plan.import_backup)):
        target = plan.database_url or config.database_url()
        plan.import_backup = _ask("Backup file (.exp)", plan.import_backup,
                                  lambda v: setup.check_backup(v, target))
    else:
        plan.import_backup = None

    plan.create_server = True
    print_table("Summary", ["Setting", "Value"], plan.summary())
    return _confirm("Write this configuration?", True)
