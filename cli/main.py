"""Entry point: sets up Prefect's environment, then dispatches to the command groups.

Every error a user can cause is turned into one line on stderr and exit code 2 here, so no
command needs its own try/except and no traceback reaches a normal run.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from patchflow.ops import prefect_env
from patchflow.untrusted import strip_controls

app = typer.Typer(
    name="patchflow",
    help="Patch management server for Windows endpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    # Help texts name config sections as `[server] port`: plain text, not Rich markup (which
    # would swallow the brackets). Applies to every command group below this one.
    rich_markup_mode=None,
)
# Read from the environment by patchflow/config.py; the root options set them for one run.
ENV_OPTIONS = ("PATCHFLOW_HOME", "PATCHFLOW_DATABASE_URL")


def _version(value: bool) -> None:
    if value:
        from patchflow import __version__

        print(f"patchflow {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    home: str = typer.Option(None, "--home", envvar="PATCHFLOW_HOME", metavar="DIR",
                             help="Where patchflow keeps its state (default ./.patchflow)"),
    database_url: str = typer.Option(
        None, "--database-url", envvar="PATCHFLOW_DATABASE_URL", metavar="URL",
        help="Database to use instead of patchflow.toml's (default: SQLite in the home)"),
    version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                 help="Print the version and exit"),
) -> None:
    """Patch management server for Windows endpoints."""
    for name, value in zip(ENV_OPTIONS, (home, database_url), strict=True):
        if value:
            os.environ[name] = value
    # Flows the command runs report to this home's `patchflow serve` Prefect server when one
    # runs, not to a temporary server of their own (patchflow/ops/prefect_env.py); entered here,
    # once --home is known, and left when the command ends.
    ctx.with_resource(prefect_env.cli_prefect_api())


# Each command group lives in its own module with a register(app) function; some (tokens,
# console, windows) add commands to another module's group. This order is the order of the
# commands in `patchflow --help`.
COMMAND_MODULES = (
    "init", "servers", "sync", "patches", "serve", "tls", "admin", "endpoints", "tokens",
    "groups", "policies", "scan", "install", "reports", "demo", "ops", "console", "replication",
    "schedules", "audit", "feeds", "approvals", "cycle", "windows",
)


_registered = False


def _register() -> None:
    # Once per process: tests call main() hundreds of times, and every extra registration
    # made each later call slower (about 0.05 s more per call).
    global _registered
    if _registered:
        return
    # No module is optional: one missing is a broken installation, and skipping it would
    # only turn that into "No such command" for its commands.
    for name in COMMAND_MODULES:
        importlib.import_module(f"cli.{name}").register(app)
    _registered = True


def main(argv: list[str] | None = None) -> int:
    # Owner-only files (0600, folders 0700) for all this process and the processes it starts
    # (Prefect's temporary server, install jobs) create: see patchflow/permissions.py.
    from patchflow.permissions import private_umask

    previous_umask = private_umask()
    previous_env = {name: os.environ.get(name) for name in ENV_OPTIONS}
    try:
        return _run(argv)
    finally:
        os.umask(previous_umask)  # in-process callers (tests, embedding) get theirs back
        for name, value in previous_env.items():  # and their environment (--home, ...)
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run(argv: list[str] | None) -> int:
    prefect_env.configure()
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    from models.db import DatabaseError
    from patchflow.config import ConfigError
    from patchflow.crypto import SecretError
    from patchflow.errors import UserError

    _register()
    global _json_errors
    _json_errors = "--json" in (sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=argv, prog_name="patchflow", standalone_mode=False)
    except (UserError, ConfigError, DatabaseError, SecretError) as exc:
        _error(str(exc))
        return 2
    except OperationalError as exc:
        _error(f"database unavailable: {exc.orig}")
        return 2
    except SQLAlchemyError as exc:
        _error(f"database error: {str(exc).splitlines()[0]}")
        return 2
    except KeyboardInterrupt:
        _error("interrupted", prefix="")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        _error("aborted", prefix="")
        return 1
    except _click_errors() as exc:  # usage errors arrive here in non-standalone mode
        return _usage_error(exc)
    return result if isinstance(result, int) else 0


_json_errors = False


def _error(message: str, prefix: str = "error: ") -> None:
    """One line on stderr: `error: ...`, or with --json anywhere on the command line the object
    `{"error": "..."}` (docs/cli-json.md), so a script parses failures like results."""
    text = strip_controls(message)
    if _json_errors:
        import json

        print(json.dumps({"error": text}, ensure_ascii=False), file=sys.stderr)
    else:
        print(f"{prefix}{text}", file=sys.stderr)


def _click_errors() -> tuple[type[Exception], ...]:
    """Typer raises the exceptions of the click it bundles (typer._click), not the `click`
    package's; catch both, so neither a typer upgrade nor a plain click command can bring the
    traceback back."""
    import click

    kinds: list[type[Exception]] = [click.exceptions.ClickException]
    try:
        from typer._click import exceptions as bundled
    except ImportError:
        pass
    else:
        kinds.append(bundled.ClickException)
    return tuple(kinds)


def _usage_error(exc: Exception) -> int:
    """A mistyped command, an unknown option, a missing or bad value: one line and exit 2
    (`patchflow` or a group alone still shows its help, as asked)."""
    if type(exc).__name__ == "NoArgsIsHelpError":
        exc.show()  # type: ignore[attr-defined]
        return 2
    message = exc.format_message()  # type: ignore[attr-defined]
    ctx = getattr(exc, "ctx", None)
    where = ctx.command_path if ctx is not None else "patchflow"
    _error(f"{message} (see `{where} --help`)")
    return 2


if __name__ == "__main__":
    sys.exit(main())
