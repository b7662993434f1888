"""Patch Management: the patch servers list, Add and Edit, filters, schedule, sync, delete.

Each action calls the patchflow.catalog.servers function the admin API route and `patchflow server
...` call, so a rule (a port range, a proxy URL shape, the proxy password kept encrypted) is
enforced in one place; this module only turns form fields into those calls and the one-line
errors back into messages next to the field they are about.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Product
from models.enums import Category, SyncStatus
from patchflow import upstreams
from patchflow.catalog import servers as svc
from patchflow.errors import UserError
from patchflow.ops import audit
from server.console import runs
from server.console.core import (
    ConsoleRoute,
    Form,
    act,
    db,
    field_errors,
    form_of,
    redirect,
    render,
    render_fragment,
    user_of,
)
from server.console.wording import for_web, plural

router = APIRouter(route_class=ConsoleRoute)

SORTS = ("name", "host", "status")
LANGUAGES = (
    "ar-SA", "cs-CZ", "da-DK", "de-DE", "el-GR", "en-GB", "en-US", "es-ES", "fi-FI", "fr-FR",
    "he-IL", "hu-HU", "it-IT", "ja-JP", "ko-KR", "nb-NO", "nl-NL", "pl-PL", "pt-BR", "pt-PT",
    "ru-RU", "sv-SE", "tr-TR", "uk-UA", "zh-CN", "zh-TW",
)
UPSTREAMS = tuple((c.key, c.label) for c in upstreams.choices())  # the radio buttons

# (field, pattern) in order: a service error naming the proxy's port is the proxy's.
SERVER_FIELDS = (
    ("name", r"patch server name|named .* already exists"),
    ("proxy", r"invalid proxy"),
    ("proxy_user", r"proxy-user|proxy user"),
    ("proxy", r"proxy"),
    ("wsus_url", r"WSUS URL|wsus-url"),
    ("upstream_token", r"upstream-token"),
    ("upstream_fingerprint", r"fingerprint"),
    ("upstream_remote", r"upstream-server|upstream_server"),
    ("upstream_url", r"invalid upstream 'https"),
    ("upstream", r"upstream"),
    ("msrc_source", r"MSRC source"),
    ("winget_source", r"winget source"),
    ("port", r"\bport\b"),
    ("host", r"\bhost\b"),
    ("winget_packages", r"winget-packages|PackageIdentifier"),
)
SCHEDULE_FIELDS = (("week_of_month", r"week-of-month"), ("frequency", r"frequency"),
                   ("weekday", r"weekday"), ("at", r"time"))
FILTER_RULES = (("filter_categories", r"category"), ("filter_languages", r"language"),
                ("filter_products", r"product"))


def _port(form: Form, errors: dict[str, str]) -> int | None:
    text = form.get("port")
    if not text:
        return None
    if not re.fullmatch(r"\d{1,5}", text):
        errors["port"] = f"invalid port {text!r}: give a number between 1 and 65535"
        return None
    return int(text)


def _chosen(form: Form) -> upstreams.Choice | None:
    """The upstream radio button picked, if any."""
    return next((c for c in upstreams.choices() if c.key == form.get("upstream")), None)


def _upstream(form: Form, errors: dict[str, str]) -> str | None:
    """The upstream setting the radio buttons and their fields stand for."""
    choice = _chosen(form)
    if choice is None:
        return None
    if not choice.prefix:
        return choice.key
    if choice.param is None:
        return None
    given = form.get(choice.param.field)
    if not given:
        errors[choice.param.error_field] = choice.param.missing
        return None
    return choice.with_param(given)


def edit_options(form: Form, errors: dict[str, str]) -> svc.ServerOptions:
    """Form fields → ServerOptions; an empty field keeps the stored value, except the proxy,
    whose empty URL and user clear it (an admin removes a proxy by emptying the fields). The
    fields of an upstream not chosen are not read: a connector refuses its settings on a
    server that does not sync from it."""
    packages = [p for p in re.split(r"[\s,]+", form.get("winget_packages")) if p]
    chosen = _chosen(form)
    takes = set(chosen.settings) if chosen else set()
    of_a_kind = {  # ServerOptions field: its form value
        "wsus_url": form.optional("wsus_url"),
        "upstream_server": form.get("upstream_remote"),
        "upstream_token": form.raw("upstream_token") or None,
        "upstream_fingerprint": form.optional("upstream_fingerprint"),
    }
    password: str | None = None
    if form.flag("clear_proxy_password"):
        password = ""
    elif form.raw("proxy_password"):
        password = form.raw("proxy_password")
    return svc.ServerOptions(
        host=form.optional("host"),
        port=_port(form, errors),
        upstream=_upstream(form, errors),
        msrc_source=form.optional("msrc_source"),
        winget_source=form.optional("winget_source"),
        winget_packages=packages or None,
        proxy=form.get("proxy") if "proxy" in form.values else None,
        proxy_user=form.get("proxy_user") if "proxy_user" in form.values else None,
        proxy_password=password,
        **{name: value if name in takes else None for name, value in of_a_kind.items()},
    )


def _rows(session: Session, sort: str) -> list[dict[str, Any]]:
    rows = [svc.server_to_dict(session, s) for s in svc.list_servers(session, sort)]
    for row in rows:
        _live(row)
    return rows


def _live(row: dict[str, Any]) -> None:
    """What this process knows beyond the database: a sync starting, or one that never ran."""
    name = row["name"]
    row["starting"] = runs.syncing(name) and row["sync_status"] != SyncStatus.RUNNING
    row["busy"] = row["starting"] or row["sync_status"] == SyncStatus.RUNNING
    row["launch_error"] = runs.failure(f"sync:{name}")


@router.get("/servers")
def servers_page(request: Request, sort: str = "name") -> Response:
    sort = sort if sort in SORTS else "name"
    with db(request) as session:
        rows = _rows(session, sort)
    return render(request, "servers.html", title="Patch Management", nav="servers", rows=rows,
                  sort=sort, busy=any(r["busy"] for r in rows))


@router.get("/servers.json")
def servers_status(request: Request, sort: str = "name") -> Response:
    """The list's rows again, for the page's refresh while a sync runs."""
    sort = sort if sort in SORTS else "name"
    with db(request) as session:
        rows = _rows(session, sort)
    csrf = request.state.console.csrf_token
    return JSONResponse({"html": render_fragment("_server_rows.html", rows=rows, csrf=csrf),
                         "running": any(r["busy"] for r in rows)})


@router.get("/servers/new")
def add_form(request: Request) -> Response:
    return render(request, "server_add.html", title="Add Patch Server", nav="servers",
                  values={"name": "", "host": "", "port": "6201"}, errors={})


@router.post("/servers/new")
def add_server(request: Request) -> Response:
    form = form_of(request)
    errors: dict[str, str] = {}
    port = _port(form, errors)
    name = form.get("name")
    if not errors:
        try:
            with db(request) as session:
                svc.add_server(session, name, svc.ServerOptions(host=form.get("host"),
                                                                port=port))
        except UserError as exc:
            errors = field_errors(exc, SERVER_FIELDS)
    if errors:
        values = {k: form.get(k) for k in ("name", "host", "port")}
        return render(request, "server_add.html", status=400, title="Add Patch Server",
                      nav="servers", values=values, errors=errors)
    return redirect(f"/console/servers/{name}/edit", f"Added patch server {name}: set its "
                    "upstream, filters and schedule, then start a sync.")


def _edit_context(session: Session, name: str) -> dict[str, Any]:
    server = svc.server_to_dict(session, svc.get_server(session, name))
    others = [s.name for s in svc.list_servers(session) if s.name != name]
    upstream = server["upstream"] or "microsoft"
    choice = upstreams.choice_of(upstream)
    kind = choice.key if choice else upstream
    # Each choice's field for what follows its prefix: the stored one's value, others empty.
    params = {c.param.field: c.param_of(upstream) if c == choice else ""
              for c in upstreams.choices() if c.param is not None}
    known = [(n, source) for n, source in session.execute(
        select(Product.name, Product.source).order_by(Product.source, Product.name))]
    filters = server["filters"]
    chosen_products = filters["products"] or []
    known_names = {n.casefold() for n, _s in known}
    _live(server)
    return {
        "server": server,
        "others": others,
        "upstream_kind": kind,
        "params": params,
        "upstreams": UPSTREAMS,
        "categories": [c.value for c in Category],
        "languages": sorted(set(LANGUAGES) | set(filters["languages"] or [])),
        "products": known,
        "extra_products": [p for p in chosen_products if p.casefold() not in known_names],
        "weekdays": [(d, d.capitalize()) for d in svc.WEEKDAYS],
    }


def _edit_page(request: Request, name: str, status: int = 200, errors: dict[str, str] | None = None,
               values: dict[str, Any] | None = None, section: str | None = None) -> Response:
    with db(request) as session:
        context = _edit_context(session, name)
    shown = {k: for_web(v) for k, v in (errors or {}).items()}
    return render(request, "server_edit.html", status=status, title=f"Patch server {name}",
                  nav="servers", errors=shown, values=values or {}, section=section,
                  **context)


@router.get("/servers/{name}/edit")
def edit_form(request: Request, name: str) -> Response:
    return _edit_page(request, name)


@router.get("/servers/{name}/status.json")
def server_status(request: Request, name: str) -> Response:
    with db(request) as session:
        context = _edit_context(session, name)
    server = context["server"]
    html = render_fragment("_server_status.html", server=server,
                           csrf=request.state.console.csrf_token)
    return JSONResponse({"html": html, "running": server["busy"],
                         "status": server["sync_status"]})


FILTER_SECTIONS = ("categories", "languages", "products")


def _week(form: Form, errors: dict[str, str]) -> int | None:
    if form.get("frequency") != "monthly":
        return None
    text = form.get("week_of_month") or "1"
    if not text.isdigit():
        errors["week_of_month"] = "the week of the month is a number from 1 to 5 (5 = last)"
        return None
    return int(text)


def filter_value(form: Form, section: str) -> str:
    """'all' when the section's All box is ticked, else the ticked values (plus, for products,
    the names typed in the extra field), as the service's comma-separated list."""
    if form.flag(f"all_{section}"):
        return "all"
    values = form.getlist(section)
    if section == "products":
        values += [p.strip() for p in form.get("extra_products").split(",") if p.strip()]
    if not values:
        raise UserError(f"choose at least one {section[:-1]} or tick All {section}")
    return ",".join(dict.fromkeys(values))


def submitted(form: Form) -> dict[str, Any]:
    """What was sent, to show again after an error (never a password or token)."""
    values: dict[str, Any] = {k: v[0] for k, v in form.values.items()
                              if "password" not in k and "token" not in k}
    values["schedule_enabled"] = form.flag("schedule_enabled")
    for section in FILTER_SECTIONS:
        values[f"chosen_{section}"] = (None if form.flag(f"all_{section}")
                                       else form.getlist(section))
    return values


@router.post("/servers/{name}/edit")
def edit_server(request: Request, name: str) -> Response:
    """The whole edit page is one form: settings, sync schedule and filters are saved
    together, in one transaction, so saving never drops an edit made elsewhere on the page."""
    form = form_of(request)
    errors: dict[str, str] = {}
    opts = edit_options(form, errors)
    # The page marks its schedule and filters parts; a post without them (a script, an older
    # page) leaves the schedule and filters as they are.
    with_schedule, with_filters = form.flag("schedule_part"), form.flag("filters_part")
    enabled = form.flag("schedule_enabled")
    week = _week(form, errors) if enabled else None
    filters: dict[str, str] = {}
    for section in FILTER_SECTIONS if with_filters else ():
        try:
            filters[section] = filter_value(form, section)
        except UserError as exc:
            errors[f"filter_{section}"] = for_web(str(exc))
    if not errors:
        stage = SERVER_FIELDS
        try:
            with db(request) as session:
                svc.edit_server(session, name, opts)
                stage = SCHEDULE_FIELDS
                if with_schedule and enabled:
                    svc.set_schedule(session, name, form.get("frequency"),
                                     form.get("weekday"), form.get("at"), week)
                elif with_schedule:
                    svc.clear_schedule(session, name)
                stage = FILTER_RULES
                if with_filters:
                    svc.set_filters(session, name, filters["categories"],
                                    filters["languages"], filters["products"])
                audit.record(session, user_of(request), "server.edit", name,
                             ("schedule " + ("on" if enabled else "off"))
                             if with_schedule else None)
        except UserError as exc:
            errors = field_errors(exc, stage)
    if errors:
        return _edit_page(request, name, 400, errors, submitted(form))
    return redirect(f"/console/servers/{name}/edit", f"Saved patch server {name}; the next "
                    "sync applies its filters.")


def _back(form: Form, name: str) -> str:
    if form.get("back") == "list":
        return "/console/servers"
    return f"/console/servers/{name}/edit"


@router.post("/servers/{name}/sync")
def start_sync(request: Request, name: str) -> Response:
    def work() -> str:
        with db(request) as session:
            runs.start_sync(session, name, user_of(request))
        return f"Started the sync of {name}."

    return act(_back(form_of(request), name), work)


@router.post("/servers/{name}/sync/stop")
def stop_sync(request: Request, name: str) -> Response:
    def work() -> str:
        with db(request) as session:
            runs.stop_sync(session, name)
        return f"Asked the sync of {name} to stop."

    return act(_back(form_of(request), name), work)


@router.post("/servers/{name}/delete")
def delete_server(request: Request, name: str) -> Response:
    """Delete after a confirmation; policies that use the server are named, and moved to the
    patch server chosen on the confirmation page (or the delete is refused)."""
    form = form_of(request)
    if form.get("confirmed") != "yes":
        with db(request) as session:
            policies = svc.policies_using(session, name)
            others = [s.name for s in svc.list_servers(session) if s.name != name]
        return render(request, "server_delete.html", title="Delete patch server",
                      nav="servers", name=name, policies=policies, others=others)
    reassign = form.optional("reassign_to")

    def work() -> str:
        with db(request) as session:
            moved = svc.delete_server(session, name, reassign)
            audit.record(session, user_of(request), "server.delete", name,
                         f"policies {', '.join(moved)} moved to {reassign}" if moved else None)
        if moved:
            return (f"Deleted patch server {name}; moved "
                    f"{plural(len(moved), 'policy', 'policies')} ({', '.join(moved)}) "
                    f"to {reassign}.")
        return f"Deleted patch server {name}."

    return act("/console/servers", work)
