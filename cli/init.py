"""`patchflow init`: create the home, upgrade the database, generate what the server needs."""

from __future__ import annotations

import typer

from cli.common import console


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init(
    database_url: str = typer.Option(
        None, "--database-url", help="mysql+pymysql://user:pass@host/patchflow (default: SQLite)"
    ),
    host: str = typer.Option(None, "--host", help="Public host name or IP of this server"),
    port: int = typer.Option(None, "--port", help="SSL port endpoints connect to (default 6201)"),
    cert: str = typer.Option(None, "--cert", help="Use this TLS certificate (PEM) instead"),
    key: str = typer.Option(None, "--key", help="Private key of --cert (PEM)"),
) -> None:
    """Create PATCHFLOW_HOME, write patchflow.toml and upgrade the database. Safe to run twice."""
    import patchflow.tls  # noqa: F401  registers the TLS certificate init hook
    from models.db import DatabaseError, dispose_all, make_engine
    from models.migrate import upgrade
    from patchflow import config, crypto, setup

    home = config.home()
    home.mkdir(parents=True, exist_ok=True)
    if database_url:
        # Check the connection before anything is written.
        engine = make_engine(database_url)
        try:
            with engine.connect():
                pass
        except Exception as exc:  # any driver error means "cannot connect"
            where = setup.redacted_url(database_url)
            raise DatabaseError(f"cannot connect to {where}: {exc}") from None
        finally:
            engine.dispose()
        config.write_config({"database": {"url": database_url}})
    values: dict[str, object] = {}
    if host:
        values["host"] = host
    if port:
        values["port"] = port
    if cert or key:
        values.update(setup.check_certificate_pair(cert, key))
    if values:
        config.write_config({"server": values})
    crypto.encrypt("")  # creates secret.key on first run
    dispose_all()
    before, after = upgrade()
    created = setup.ensure_home_layout()
    console.print(f"home: {home}")
    console.print(f"database: {setup.redacted_url(config.database_url())}")
    if before == after:
        console.print(f"schema: up to date (revision {after})")
    else:
        console.print(f"schema: upgraded {before or 'empty'} → {after}")
    for line in created:
        console.print(line)
