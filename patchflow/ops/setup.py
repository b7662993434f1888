"""What `patchflow init` creates besides the schema: folders, (via hooks) TLS material, and
the setup plan behind the wizard, the flags and `--config FILE`: one place that checks every
answer (including the database connection and the backup file) before anything is written."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.engine import make_url

from models import PatchServer
from patchflow import config, upstreams
from patchflow.errors import UserError

# Steps `init` runs that live in modules setup must not import (patchflow.ops.tls adds the HTTPS
# certificate); each returns lines to print.
INIT_HOOKS: list[Callable[[], list[str]]] = []


def ensure_home_layout() -> list[str]:
    from patchflow.permissions import make_private

    home = config.home()
    for sub in ("content", "reports", "logs", "backups", "prefect"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    for hook in INIT_HOOKS:
        lines.extend(hook())
    # A home made by an older version (or copied) under umask 022 is world-readable.
    changed, failed = make_private(home)
    if changed:
        lines.append(f"permissions: {changed} files and folders in {home} made owner-only")
    if failed:
        lines.append(f"warning: {failed} files or folders in {home} could not be made "
                     "owner-only (owned by another account?)")
    return lines


def redacted_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def check_certificate_pair(cert: str | None, key: str | None) -> dict[str, str]:
    if not cert or not key:
        raise UserError("--cert and --key go together")
    for value, what in ((cert, "certificate"), (key, "key")):
        if not Path(value).is_file():
            raise UserError(f"{what} file {value!r} does not exist")
    return {"cert": str(Path(cert).resolve()), "key": str(Path(key).resolve())}


# --- the setup plan: what `patchflow init` will do, checked before anything is written -------

LOCAL_SERVER = "local"
DEFAULT_SSL_PORT = 6201
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?$|^\[?[0-9A-Fa-f:.]+\]?$")


@dataclass
class SetupPlan:
    """The answers of the wizard, the flags or a --config file. None means "keep / default".

    `check()` validates everything and touches nothing but the MySQL server it connects to;
    `apply()` writes. The wizard shows `summary()` in between and asks for confirmation.
    """

    content_dir: str | None = None
    database_url: str | None = None  # None: embedded SQLite (or what is configured)
    proxy_host: str | None = None
    proxy_port: int | None = None
    proxy_user: str | None = None
    proxy_password: str | None = field(default=None, repr=False)
    upstream: str | None = None  # microsoft | wsus
    wsus_url: str | None = None
    host: str | None = None
    port: int | None = None
    cert: str | None = None
    key: str | None = None
    import_backup: str | None = None
    create_server: bool = False  # create (or update) the local patch server
    notes: list[str] = field(default_factory=list)

    @property
    def proxy_url(self) -> str | None:
        if not self.proxy_host:
            return None
        host = f"[{self.proxy_host}]" if ":" in self.proxy_host else self.proxy_host
        return f"http://{host}:{self.proxy_port or 8080}"

    def check(self) -> None:
        """Every value, the database connection and the backup file; one UserError each."""
        if self.content_dir is not None:
            check_content_dir(self.content_dir)
        if self.database_url:
            check_database(self.database_url)
        if self.proxy_host is not None:
            check_host(self.proxy_host, "proxy host")
            check_port(self.proxy_port or 8080, "proxy port")
        elif self.proxy_user:
            raise UserError("a proxy user needs a proxy (--proxy http://host:port)")
        if self.proxy_user and self.proxy_password is None:
            raise UserError("the proxy password is missing: set PATCHFLOW_PROXY_PASSWORD")
        choice = wizard_upstream(self.upstream)
        if choice is None:
            keys = [c.key for c in upstreams.choices(wizard=True)]
            raise UserError(f"invalid upstream {self.upstream!r}: use {' or '.join(keys)} "
                            "(other upstreams: `patchflow server edit local --upstream ...`)")
        if "wsus_url" in choice.settings and not self.wsus_url:
            raise UserError(f"the {choice.key} upstream needs its URL "
                            "(--wsus-url https://wsus:8531)")
        if self.wsus_url:
            check_url(self.wsus_url, "WSUS URL")
        if self.host is not None:
            check_host(self.host, "host")
        if self.port is not None:
            check_port(self.port, "SSL port")
        if self.cert or self.key:
            check_certificate_pair(self.cert, self.key)
        if self.import_backup:
            check_backup(self.import_backup, self.database_url or config.database_url())

    def summary(self) -> list[tuple[str, str]]:
        """(setting, value) rows for the confirmation table; never a password."""
        rows = [
            ("home", str(config.home())),
            ("content folder", self.content_dir or str(config.content_dir())),
            ("database", redacted_url(self.database_url) if self.database_url
             else f"{redacted_url(config.database_url())} (embedded SQLite)"
             if config.database_url().startswith("sqlite") else
             redacted_url(config.database_url())),
            ("proxy", self.proxy_url or "none"),
        ]
        if self.proxy_user:
            rows.append(("proxy user", f"{self.proxy_user} (password stored encrypted)"))
        choice = wizard_upstream(self.upstream) or upstreams.choices(wizard=True)[0]
        rows.append(("upstream", choice.summary.format(wsus_url=self.wsus_url)))
        rows.append(("public host name", self.host or _current_host()))
        rows.append(("SSL port", str(self.port or config.setting("server", "port",
                                                                   DEFAULT_SSL_PORT))))
        if self.cert:
            rows.append(("TLS certificate", f"{self.cert} (key {self.key})"))
        rows.append(("import patch server data", self.import_backup or "no"))
        if self.create_server:
            rows.append(("patch server", f"{LOCAL_SERVER} (created or updated)"))
        return rows

    def apply(self) -> list[str]:
        """Write the configuration, upgrade the schema, import the backup, create the local
        patch server; returns lines to print. `init` without answers does only the first two
        (as it always did)."""
        from models.db import dispose_all, get_engine
        from models.migrate import upgrade
        from patchflow import crypto

        home = config.home()
        home.mkdir(parents=True, exist_ok=True)
        values: dict[str, dict[str, Any]] = {}
        if self.database_url:
            values["database"] = {"url": self.database_url}
        if self.content_dir:
            values["content"] = {"dir": str(Path(self.content_dir).expanduser().resolve())}
        server: dict[str, Any] = {}
        if self.host:
            server["host"] = self.host
        if self.port:
            server["port"] = self.port
        if self.cert or self.key:
            server.update(check_certificate_pair(self.cert, self.key))
        if server:
            values["server"] = server
        if values:
            path = config.write_config(values)
            if make_url(config.database_url()).password:
                path.chmod(0o600)  # the database password is in it: owner only
        crypto.encrypt("")  # creates secret.key on first run
        dispose_all()
        before, after = upgrade()
        lines = [f"home: {home}", f"database: {redacted_url(config.database_url())}",
                 f"schema: up to date (revision {after})" if before == after
                 else f"schema: upgraded {before or 'empty'} → {after}"]
        if self.import_backup:
            from patchflow.ops.backup import passphrase_from, plain_archive, restore_backup

            archive = Path(self.import_backup).expanduser()
            with plain_archive(archive, passphrase_from(None), home) as plain:
                counts = restore_backup(get_engine(), plain, content_dir=config.content_dir(),
                                        label=archive)
            lines.append(f"imported {sum(counts.values())} rows into {len(counts)} tables "
                         f"from {self.import_backup}")
        config.content_dir().mkdir(parents=True, exist_ok=True)
        lines.extend(ensure_home_layout())
        if self.create_server:
            lines.append(self._save_server())
        return lines

    def _save_server(self) -> str:
        from models.db import session_scope
        from patchflow.catalog import servers

        opts = servers.ServerOptions(
            host=self.host or _current_host(),
            port=self.port or int(config.setting("server", "port", DEFAULT_SSL_PORT)),
            upstream=self.upstream, wsus_url=self.wsus_url,
        )
        if self.proxy_host is not None:
            opts.proxy = self.proxy_url
            opts.proxy_user = self.proxy_user or ""
            opts.proxy_password = self.proxy_password or ""
        with session_scope() as session:
            exists = session.scalar(select(PatchServer.id).where(
                PatchServer.name == LOCAL_SERVER)) is not None
            if exists:
                servers.edit_server(session, LOCAL_SERVER, opts)
            else:
                servers.add_server(session, LOCAL_SERVER, opts)
        return (f"patch server {LOCAL_SERVER} {'updated' if exists else 'created'}: "
                f"{opts.host}:{opts.port}, upstream {self.upstream or 'microsoft'}"
                + (f", proxy {self.proxy_url}" if self.proxy_url else ""))


def wizard_upstream(value: str | None) -> upstreams.Choice | None:
    """The upstream choice `patchflow init` offers that `value` names; not given means the
    first (Microsoft). Other upstreams are set with `patchflow server edit`."""
    offered = upstreams.choices(wizard=True)
    if value is None:
        return offered[0]
    return next((c for c in offered if c.key == value), None)


def _current_host() -> str:
    return str(config.setting("server", "host") or socket.getfqdn() or "localhost")


def check_host(value: str, what: str) -> str:
    if not _HOST.fullmatch(value or ""):
        raise UserError(f"invalid {what} {value!r}: give a host name or an IP address")
    return value


def check_port(value: int, what: str) -> int:
    if not 1 <= int(value) <= 65535:
        raise UserError(f"invalid {what} {value}: must be between 1 and 65535")
    return int(value)


def check_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UserError(f"invalid {what} {value!r}: bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"invalid {what} {value!r}: expected https://host[:port]")
    return value


def check_content_dir(value: str) -> Path:
    """A folder that exists and is writable, or that can be created (its nearest existing
    parent is a writable folder); nothing is created here."""
    path = Path(value).expanduser().resolve()
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UserError(f"content folder {value!r}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"content folder {value!r}: {probe} is not writable")
    return path


def check_database(url: str) -> None:
    """Connect once; any failure is one line with the password hidden. SQLite URLs are only
    parsed: connecting would create the file before the user confirmed."""
    from models.db import DatabaseError, make_engine

    try:
        parsed = make_url(url)
    except Exception:
        raise UserError(f"invalid database URL {url!r}: expected "
                        "mysql+pymysql://user:password@host:3306/patchflow") from None
    if parsed.get_backend_name() == "sqlite":
        return
    if parsed.get_backend_name() not in ("mysql", "mariadb"):
        raise UserError(f"unsupported database {parsed.get_backend_name()!r}: use embedded "
                        "SQLite or MySQL/MariaDB (mysql+pymysql://...)")
    engine = make_engine(url)
    try:
        with engine.connect():
            pass
    except Exception as exc:  # any driver error means "cannot connect"
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise DatabaseError(f"cannot connect to {redacted_url(url)}: {reason}") from None
    finally:
        engine.dispose()


def check_backup(path: str, target_url: str) -> None:
    """The archive is complete and of this schema, and the target database holds no data:
    all known before the first byte is written."""
    from models.migrate import head_revision
    from patchflow.ops.backup import passphrase_from, plain_archive, read_manifest

    archive = Path(path).expanduser()
    # An encrypted archive is opened with PATCHFLOW_BACKUP_PASSPHRASE: a wrong one fails here.
    with plain_archive(archive, passphrase_from(None)) as plain:
        manifest = read_manifest(plain, label=archive)
    if manifest.get("schema_revision") != head_revision():
        raise UserError(f"{archive}: backup schema {manifest.get('schema_revision')} differs "
                        f"from this patchflow's {head_revision()}")
    if _has_data(target_url):
        raise UserError("the database already holds data: import a backup only into an empty "
                        "one (or use `patchflow restore FILE --force`)")


def _has_data(url: str) -> bool:
    import sqlalchemy as sa

    from models import Base
    from models.db import make_engine

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database
        if not db or db == ":memory:" or not Path(db).exists():
            return False
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            for table in Base.metadata.sorted_tables:
                if table.name in present and table.name != "alembic_version" and conn.execute(
                        sa.select(sa.func.count()).select_from(table)).scalar():
                    return True
    finally:
        engine.dispose()
    return False


def plan_from_file(path: str) -> SetupPlan:
    """A --config file: the wizard's answers as TOML (see docs/operations.md)."""
    import tomllib

    file = Path(path).expanduser()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{file}: no such file") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"{file}: cannot read: {exc}") from None
    known = {"content": {"dir"}, "database": {"url"},
             "proxy": {"host", "port", "user", "password"},
             "upstream": {"kind", "wsus_url"}, "server": {"host", "port", "cert", "key"},
             "import": {"backup"}}
    for section, items in data.items():
        if section not in known or not isinstance(items, dict):
            raise UserError(f"{file}: unknown section [{section}] (known: "
                            f"{', '.join(sorted(known))})")
        for key in items:
            if key not in known[section]:
                raise UserError(f"{file}: unknown key {key!r} in [{section}]")

    def get(section: str, key: str) -> Any:
        return data.get(section, {}).get(key)

    if get("proxy", "password") is not None:
        raise UserError(f"{file}: do not put the proxy password in a file: set "
                        "PATCHFLOW_PROXY_PASSWORD")
    port, proxy_port = get("server", "port"), get("proxy", "port")
    for value, what in ((port, "[server] port"), (proxy_port, "[proxy] port")):
        if value is not None and not isinstance(value, int):
            raise UserError(f"{file}: {what} must be a number")
    return SetupPlan(
        content_dir=get("content", "dir"), database_url=get("database", "url"),
        proxy_host=get("proxy", "host"), proxy_port=proxy_port,
        proxy_user=get("proxy", "user"),
        proxy_password=os.environ.get("PATCHFLOW_PROXY_PASSWORD") if get("proxy", "user")
        else None,
        upstream=get("upstream", "kind"), wsus_url=get("upstream", "wsus_url"),
        host=get("server", "host"), port=port, cert=get("server", "cert"),
        key=get("server", "key"), import_backup=get("import", "backup"), create_server=True,
    )
