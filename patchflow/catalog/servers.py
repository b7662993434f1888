"""Patch server management: the one place that validates and stores patch server settings.

The CLI, the admin API and the web console all call these functions, so a rule (a port range, a
proxy URL shape, the password never leaving encrypted) holds whichever door it came through.
What belongs to one kind of upstream (its `--upstream` values, the MSRC source, the WSUS URL, a
replica's token) is checked by that kind's connector (patchflow/upstreams/), called from here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models import Patch, PatchServer, ServerPatch, SyncDocument
from models.enums import Category, SyncStatus
from patchflow import crypto, upstreams
from patchflow.errors import NotFoundError, UserError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?$|^\[?[0-9A-Fa-f:]+\]?$")
_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")


def _option(description: str | Callable[[], str]) -> Any:
    """A ServerOptions field with the description the admin API documents it with (a function
    when it is read from the connectors, which are loaded on first use)."""
    return field(default=None, metadata={"description": description})


def _upstream_forms() -> str:
    return upstreams.forms()


@dataclass
class ServerOptions:
    """Settable fields; None means "leave as is" on edit and "use the default" on add.

    The admin API's request body is built from these fields (server.admin_servers), so a new
    setting is added here, to the CLI's options and to the console form, and nowhere else."""

    host: str | None = None
    port: int | None = None
    upstream: str | None = _option(_upstream_forms)
    wsus_url: str | None = None
    msrc_source: str | None = None
    winget_source: str | None = None
    winget_packages: list[str] | None = None
    proxy: str | None = None
    proxy_user: str | None = None
    proxy_password: str | None = _option("Write-only; stored encrypted")
    # Another patchflow instance as upstream (`upstream="https://host:port"`); "" = its default.
    upstream_server: str | None = _option(
        "For an https:// upstream: which of its patch servers (default: its first)")
    upstream_token: str | None = _option("Replication token; write-only, stored encrypted")
    upstream_fingerprint: str | None = _option("SHA-256 of the upstream's certificate, pinned")


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name or ""):
        raise UserError(
            f"invalid patch server name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


def _validate_host(host: str) -> str:
    if not _HOST.fullmatch(host or ""):
        raise UserError(f"invalid host {host!r}: give a host name or an IP address")
    return host


def _validate_port(port: int) -> int:
    if not 1 <= int(port) <= 65535:
        raise UserError(f"invalid port {port}: must be between 1 and 65535")
    return int(port)


def validate_url(value: str, what: str, schemes: tuple[str, ...] = ("https", "http")) -> str:
    parts = urlsplit(value)
    if parts.scheme not in schemes or not parts.hostname:
        raise UserError(f"invalid {what} {value!r}: expected {' or '.join(schemes)}://host[:port]")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise UserError(f"invalid {what} {value!r}: bad port") from None
    return value


def _validate_proxy(value: str) -> str:
    """A proxy URL without credentials: `http://user:password@host` would keep the password in
    clear in the database, `server list --json`, the console and backups, so the user and
    password go to their own fields (the password is stored encrypted)."""
    parts = urlsplit(value)
    if "@" in parts.netloc:
        shown = f"{parts.scheme}://***@{parts.netloc.rsplit('@', 1)[1]}"
        raise UserError(
            f"invalid proxy {shown!r}: a proxy URL must not hold credentials; give the user "
            "with --proxy-user (the password comes from PATCHFLOW_PROXY_PASSWORD or a prompt; "
            "proxy_user and proxy_password in the console and the admin API), where the "
            "password is stored encrypted"
        )
    return validate_url(value, "proxy", ("http", "https"))


def _shown_proxy(url: str | None) -> str | None:
    """A stored proxy URL for display: credentials saved before they were refused are masked."""
    if not url:
        return url
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def validate_source(value: str, what: str, allow_none: bool = False) -> str | None:
    """A source is a URL (online) or an existing folder or file (offline mirror)."""
    if allow_none and value.lower() == "none":
        return "none"
    if value.startswith(("http://", "https://")):
        return validate_url(value, what)
    path = Path(value).expanduser()
    if not path.exists():
        raise UserError(f"invalid {what} {value!r}: not a URL and no such folder or file")
    return str(path.resolve())


def normalize_fingerprint(value: str) -> str:
    """A SHA-256 certificate fingerprint as `AB:CD:...` (what `patchflow tls fingerprint`
    prints); accepts that form, bare hex, and a `SHA256:` prefix."""
    text = value.strip()
    if text.lower().startswith("sha256:"):
        text = text[7:]
    digits = re.sub(r"[\s:]", "", text).upper()
    if not re.fullmatch(r"[0-9A-F]{64}", digits):
        raise UserError(
            f"invalid fingerprint {value!r}: expected the SHA-256 fingerprint printed by "
            "`patchflow tls fingerprint` on the upstream (64 hex digits, colons optional)"
        )
    return ":".join(digits[i : i + 2] for i in range(0, 64, 2))


def get_server(session: Session, name: str) -> PatchServer:
    server = session.scalar(select(PatchServer).filter_by(name=name))
    if server is None:
        raise NotFoundError(f"no patch server named {name!r}")
    return server


def _apply(session: Session, server: PatchServer, opts: ServerOptions) -> None:
    if opts.host is not None:
        server.host = _validate_host(opts.host)
    if opts.port is not None:
        server.port = _validate_port(opts.port)
    # The upstream and the settings that belong to a kind of upstream (the MSRC source, the
    # WSUS URL, a replica's token and pinned certificate, the winget packages) are checked by
    # the connectors (patchflow/upstreams/), which also start over when the upstream changes.
    upstreams.apply(server, opts, session)
    _apply_proxy(server, opts)


def _apply_proxy(server: PatchServer, opts: ServerOptions) -> None:
    """The proxy and its credentials change together: no user without a proxy, no password
    without a user, so clearing the proxy (or its user) also drops the encrypted password
    instead of leaving it behind unused."""
    if opts.proxy is not None:
        server.proxy_url = _validate_proxy(opts.proxy) if opts.proxy else None
    if opts.proxy_user is not None:
        server.proxy_user = opts.proxy_user or None
    if opts.proxy_password is not None:
        password = opts.proxy_password
        server.proxy_password_enc = crypto.encrypt(password) if password else None
    if not server.proxy_url:
        if opts.proxy_user:
            raise UserError("--proxy-user needs --proxy http://host:port")
        server.proxy_user = None
    if not server.proxy_user:
        if opts.proxy_password:
            raise UserError("a proxy password needs a proxy user (--proxy-user)")
        server.proxy_password_enc = None


def add_server(session: Session, name: str, opts: ServerOptions) -> PatchServer:
    validate_name(name)
    if session.scalar(select(PatchServer).filter_by(name=name)) is not None:
        raise UserError(f"a patch server named {name!r} already exists")
    if not opts.host:
        raise UserError("--host is required: the public host name or IP endpoints use")
    server = PatchServer(
        name=name,
        host="",
        port=6201,
        upstream="microsoft",
        sync_status=SyncStatus.NEVER,
        sync_stop_requested=False,
        replication_revision=0,
    )
    upstreams.defaults(server)
    _apply(session, server, opts)
    session.add(server)
    session.flush()
    return server


def edit_server(session: Session, name: str, opts: ServerOptions) -> PatchServer:
    server = get_server(session, name)
    _apply(session, server, opts)
    session.flush()
    return server


def policies_using(session: Session, name: str) -> list[str]:
    """The policies whose endpoints get their patches from this patch server."""
    from models import Policy

    server = get_server(session, name)
    return list(session.scalars(select(Policy.name).where(Policy.patch_server_id == server.id)
                                .order_by(Policy.name)))


def delete_server(session: Session, name: str, reassign_to: str | None = None) -> list[str]:
    """Delete a patch server. Policies that use it are refused (their endpoints would lose
    their patch source without a word) unless `reassign_to` names the patch server they move
    to; returns the policies moved."""
    from models import Policy

    server = get_server(session, name)
    if server.sync_status == SyncStatus.RUNNING:
        raise UserError(f"patch server {name!r} is syncing: stop the sync first")
    users = [s.name for s in session.scalars(select(PatchServer))
             if upstreams.syncs_from(s, name)]
    if users:
        raise UserError(f"patch server {name!r} is the upstream of {', '.join(users)}")
    policies = policies_using(session, name)
    if policies and not reassign_to:
        raise UserError(f"patch server {name!r} is used by the policies {', '.join(policies)}: "
                        "move them to another patch server first")
    if policies and reassign_to:
        if reassign_to == name:
            raise UserError("choose another patch server for its policies, not itself")
        target = get_server(session, reassign_to)
        for policy in session.scalars(select(Policy).where(Policy.patch_server_id == server.id)):
            policy.patch_server_id = target.id
    session.delete(server)
    session.flush()
    return policies if reassign_to else []


def clear_schedule(session: Session, name: str) -> PatchServer:
    """Switch the sync schedule off: syncs then run only when started."""
    server = get_server(session, name)
    server.schedule_frequency = None
    server.schedule_weekday = None
    server.schedule_at = None
    server.schedule_week_of_month = None
    session.flush()
    return server


def _parse_list(value: str | None) -> list[str] | None:
    """'all' (or nothing) means no filter; otherwise a comma-separated list."""
    if value is None:
        return None
    if value.strip().lower() == "all":
        return []
    return [item.strip() for item in value.split(",") if item.strip()]


def set_filters(
    session: Session,
    name: str,
    categories: str | None = None,
    languages: str | None = None,
    products: str | None = None,
) -> PatchServer:
    server = get_server(session, name)
    cats = _parse_list(categories)
    if cats:
        known = {c.value for c in Category}
        bad = [c for c in cats if c not in known]
        if bad:
            raise UserError(f"unknown category {bad[0]!r}: use one of {', '.join(sorted(known))}")
    langs = _parse_list(languages)
    if langs:
        bad = [lang for lang in langs if not _LANG.fullmatch(lang)]
        if bad:
            raise UserError(f"invalid language {bad[0]!r}: use tags like en-US or de-DE")
    prods = _parse_list(products)
    before = filters_of(server)
    for value, column in ((cats, "filter_categories"), (langs, "filter_languages"),
                          (prods, "filter_products")):
        if value is not None:
            setattr(server, column, json.dumps(value) if value else None)
    if filters_of(server) != before:
        # Documents already synced were filtered the old way: the next sync re-reads them all
        # (and each connector reads its upstream from the start again).
        session.execute(delete(SyncDocument).where(SyncDocument.server_id == server.id))
        upstreams.reset(server)
    session.flush()
    return server


def set_schedule(
    session: Session,
    name: str,
    frequency: str,
    weekday: str,
    at: str,
    week_of_month: int | None = None,
) -> PatchServer:
    server = get_server(session, name)
    if frequency not in ("weekly", "monthly"):
        raise UserError(f"invalid frequency {frequency!r}: use weekly or monthly")
    if weekday.lower() not in WEEKDAYS:
        raise UserError(f"invalid weekday {weekday!r}: use one of {', '.join(WEEKDAYS)}")
    if not _TIME.fullmatch(at):
        raise UserError(f"invalid time {at!r}: use HH:MM, 24-hour")
    if frequency == "monthly":
        week_of_month = week_of_month or 1
        if not 1 <= week_of_month <= 5:
            raise UserError("--week-of-month must be between 1 and 5 (5 = last)")
    elif week_of_month is not None:
        raise UserError("--week-of-month applies to --frequency monthly only")
    server.schedule_frequency = frequency
    server.schedule_weekday = weekday.lower()
    server.schedule_at = at
    server.schedule_week_of_month = week_of_month
    session.flush()
    return server


def filters_of(server: PatchServer) -> dict[str, list[str] | None]:
    """None means All."""
    return {
        "categories": json.loads(server.filter_categories) if server.filter_categories else None,
        "languages": json.loads(server.filter_languages) if server.filter_languages else None,
        "products": json.loads(server.filter_products) if server.filter_products else None,
    }


def proxies_of(server: PatchServer) -> dict[str, str] | None:
    """requests' proxies mapping with the decrypted credentials, only ever held in memory."""
    if not server.proxy_url:
        return None
    url = server.proxy_url
    if server.proxy_user:
        from urllib.parse import quote

        parts = urlsplit(url)
        password = crypto.decrypt(server.proxy_password_enc) if server.proxy_password_enc else ""
        auth = quote(server.proxy_user, safe="") + ":" + quote(password, safe="")
        url = f"{parts.scheme}://{auth}@{parts.netloc}{parts.path}"
    return {"http": url, "https": url}


def server_to_dict(session: Session, server: PatchServer) -> dict[str, Any]:
    patches = session.scalar(
        select(func.count()).select_from(ServerPatch).where(ServerPatch.server_id == server.id)
    )
    schedule = None
    if server.schedule_frequency:
        schedule = {
            "frequency": server.schedule_frequency,
            "weekday": server.schedule_weekday,
            "at": server.schedule_at,
            "week_of_month": server.schedule_week_of_month,
        }
    return {
        "name": server.name,
        "host": server.host,
        "port": server.port,
        "upstream": server.upstream,
        "wsus_url": server.wsus_url,
        "msrc_source": server.msrc_source,
        "winget_source": server.winget_source,
        "winget_packages": json.loads(server.winget_packages or "[]"),
        "proxy": _shown_proxy(server.proxy_url),
        "proxy_user": server.proxy_user,
        "proxy_password_set": bool(server.proxy_password_enc),
        "upstream_server": server.upstream_server,
        "upstream_fingerprint": server.upstream_fingerprint,
        "upstream_token_set": bool(server.upstream_token_enc),
        "replication_revision": server.replication_revision,
        "filters": filters_of(server),
        "schedule": schedule,
        "sync_status": server.sync_status,
        "sync_status_at": server.sync_status_at.isoformat() if server.sync_status_at else None,
        "sync_message": server.sync_message,
        "patches": patches or 0,
    }


def list_servers(session: Session, sort: str = "name") -> list[PatchServer]:
    columns = {
        "name": PatchServer.name,
        "host": PatchServer.host,
        "status": PatchServer.sync_status,
    }
    if sort not in columns:
        raise UserError(f"invalid sort {sort!r}: use name, host or status")
    return list(session.scalars(select(PatchServer).order_by(columns[sort], PatchServer.name)))


def patch_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(Patch)) or 0
