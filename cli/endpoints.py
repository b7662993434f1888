"""The endpoint channel's commands: `serve`, `tls`, `admin token`, `endpoints`, `groups`,
`policies`. Each command is a thin wrapper over patchflow.fleet, like the admin API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from cli.common import (
    console,
    db_session,
    plain,
    print_json,
    print_json_line,
    print_table,
    split_csv,
)
from patchflow.errors import UserError
from patchflow.untrusted import strip_controls

endpoints_app = typer.Typer(help="Endpoints: enrollment tokens, inventories, groups, revocation.")
token_app = typer.Typer(help="Enrollment tokens agents trade for their identity.")
groups_app = typer.Typer(help="Endpoint groups (they nest).")
policies_app = typer.Typer(help="Policies applied to groups.")
tls_app = typer.Typer(help="The HTTPS server's certificate.")
admin_app = typer.Typer(help="Admin API access.")
admin_token_app = typer.Typer(help="Admin API tokens.")
admin_app.add_typer(admin_token_app, name="token")
endpoints_app.add_typer(token_app, name="token")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(tls_app, name="tls")
    app.add_typer(admin_app, name="admin")
    app.add_typer(endpoints_app, name="endpoints")
    app.add_typer(groups_app, name="groups")
    app.add_typer(policies_app, name="policies")


# --- server ---------------------------------------------------------------------------------


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
    from server.run import DEFAULT_PORT

    port = port or int(config.setting("server", "port", DEFAULT_PORT))
    if not 1 <= port <= 65535:
        raise UserError(f"invalid port {port}: must be between 1 and 65535")
    code = run_service(host, port, workers=workers, access_log=access_log, scheduler=scheduler,
                       prefect_port=prefect_port)
    if code:
        raise typer.Exit(code)


@tls_app.command("fingerprint")
def tls_fingerprint(
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Print the server certificate's SHA-256 fingerprint (give it to `patchflow-agent enroll`)."""
    from patchflow import tls

    cert, _key = tls.cert_paths()
    if as_json:
        print_json({"fingerprint": tls.fingerprint(cert), "certificate": str(cert)})
        return
    sys.stdout.write(tls.fingerprint(cert) + "\n")


# --- admin tokens ---------------------------------------------------------------------------


@admin_token_app.command("create")
def admin_token_create(
    name: str = typer.Option("admin", "--name", help="A label to tell tokens apart"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Create an admin API token; it is printed once and stored only as a hash."""
    from patchflow import fleet

    with db_session() as session:
        token = fleet.create_admin_token(session, name)
    if as_json:
        print_json({"token": token, "name": name})
        return
    sys.stdout.write(token + "\n")
    print("store it now: it is not shown again", file=sys.stderr)


@admin_token_app.command("list")
def admin_token_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List admin tokens (never the tokens themselves)."""
    from patchflow import fleet

    with db_session() as session:
        rows = fleet.list_admin_tokens(session)
    if as_json:
        print_json(rows)
        return
    print_table("Admin tokens", ["Id", "Name", "Created", "Revoked"],
                [[r["id"], r["name"], r["created_at"][:19], r["revoked"]] for r in rows])


@admin_token_app.command("revoke")
def admin_token_revoke(
    token_id: int = typer.Argument(..., help="Id from `admin token list`"),
) -> None:
    """Revoke an admin token."""
    from patchflow import fleet

    with db_session() as session:
        fleet.revoke_admin_token(session, token_id)
    console.print(f"revoked admin token {token_id}")


# --- enrollment tokens ----------------------------------------------------------------------


@token_app.command("create")
def token_create(
    group: str = typer.Option(None, "--group", help="Group enrolled endpoints join"),
    expires: str = typer.Option("7d", "--expires", help="30m, 12h, 7d, 2w or never"),
    uses: int = typer.Option(None, "--uses", help="How many enrollments (default: unlimited)"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Create an enrollment token; it is printed once and stored only as a hash."""
    from patchflow import fleet

    with db_session() as session:
        token, row = fleet.create_enrollment_token(session, group, expires, uses)
        info = fleet.enrollment_token_to_dict(session, row)
    if as_json:
        print_json({"token": token, **info})
        return
    sys.stdout.write(token + "\n")
    limits = [f"expires {info['expires_at'][:19]}Z" if info["expires_at"] else "never expires",
              f"{uses} use(s)" if uses else "unlimited uses"]
    if group:
        limits.append(f"group {group}")
    print(f"enrollment token {info['id']}: {', '.join(limits)}; not shown again",
          file=sys.stderr)


@token_app.command("list")
def token_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List enrollment tokens with their state (never the tokens themselves)."""
    from patchflow import fleet

    with db_session() as session:
        rows = fleet.list_enrollment_tokens(session)
    if as_json:
        print_json(rows)
        return
    print_table(
        "Enrollment tokens", ["Id", "Group", "Created", "Expires", "Uses", "Left", "State"],
        [[r["id"], r["group"], (r["created_at"] or "")[:19], (r["expires_at"] or "never")[:19],
          r["uses"], "unlimited" if r["uses_left"] is None else r["uses_left"], r["state"]]
         for r in rows],
    )


@token_app.command("revoke")
def token_revoke(
    token_id: int = typer.Argument(..., help="Id from `endpoints token list`"),
) -> None:
    """Revoke an enrollment token: agents can no longer enroll with it."""
    from patchflow import fleet

    with db_session() as session:
        fleet.revoke_enrollment_token(session, token_id)
    console.print(f"revoked enrollment token {token_id}")


# --- endpoints ------------------------------------------------------------------------------


@endpoints_app.command("list")
def endpoints_list(
    group: str = typer.Option(None, "--group", help="Only this group and its subgroups"),
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """List endpoints with their OS, last contact, scan state and inventory size.

    A re-enrolment of an existing host name waiting for approval is listed under that name as
    "(pending re-enrolment)"; in --json it has "pending_reenrollment": true."""
    from patchflow import fleet

    with db_session() as session:
        rows = fleet.list_endpoints(session, group)
    if as_json:
        print_json(rows)
        return
    print_table(
        "Endpoints",
        ["Hostname", "Group", "Policy", "OS", "Version", "Build", "Last seen", "Scan state",
         "Programs", "KBs", "Roaming"],
        [[_name_cell(r), r["group"], r["policy"],
          r["os_name"], r["display_version"], r["build"], (r["last_seen"] or "")[:19],
          "-" if r["pending_reenrollment"] else r["scan_state"], r["programs"], r["kbs"],
          "yes" if r["roaming"] else "no"]
         for r in rows],
    )
    pending = [r["hostname"] for r in rows if r["pending_reenrollment"]]
    if pending:
        print(f"{len(pending)} re-enrolment(s) await approval: patchflow endpoints "
              "approve-reenroll HOST (or reject-reenroll HOST)", file=sys.stderr)


def _name_cell(row: dict[str, Any]) -> str:
    """The name, what it is (revoked, pending), and the host name the agent reports when that
    differs: the name itself changes only through enrolment."""
    name = str(row["hostname"])
    if row["pending_reenrollment"]:
        name += " (pending re-enrolment)"
    elif row["revoked"]:
        name += " (revoked)"
    reported = row.get("reported_hostname")
    if reported and reported != row["hostname"]:
        name += f" (reports {reported})"
    return name


@endpoints_app.command("show")
def endpoints_show(
    hostname: str,
    as_json: bool = typer.Option(False, "--json", help="JSON output"),
) -> None:
    """Show one endpoint (and a re-enrolment of it waiting for approval, if any)."""
    from patchflow import fleet
    from patchflow.ms_products import endpoint_ms_products

    with db_session() as session:
        rows = fleet.describe_endpoint(session, hostname)
        if rows:  # the endpoint itself: the Microsoft products the scan maps it to
            rows[0]["ms_products"] = endpoint_ms_products(
                session, fleet.get_endpoint(session, hostname))
    if as_json:
        print_json(rows)
        return
    for row in rows:
        title = _name_cell(row)
        products = row.pop("ms_products", None)
        print_table(title, ["Field", "Value"],
                    [[key, "" if value is None else value] for key, value in row.items()])
        if products:
            print_table("Microsoft products", ["Product", "Kind", "Installed", "From"],
                        [[p["product"], p["kind"], p["installed_version"] or "", p["source"]]
                         for p in products])


def _read_documents(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read: {exc}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: malformed JSON: {exc.msg} (line {exc.lineno})") from None


@endpoints_app.command("import")
def endpoints_import(
    files: list[Path] = typer.Argument(..., help="Inventory JSON files: one object or a list"),
    group: str = typer.Option(None, "--group", help="Put the imported endpoints in this group"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per file, per line"),
) -> None:
    """Store inventories without an agent. Each file is all or nothing: a bad document rejects
    its file (with the failing field named) and the other files still import."""
    from patchflow import fleet
    from patchflow.inventory import validate_documents

    failures: list[str] = []
    for path in files:
        try:
            try:
                docs = validate_documents(_read_documents(path))
            except ValueError as exc:
                raise UserError(f"{path}: {exc}") from None
            with db_session() as session:
                ids = fleet.import_inventories(session, docs, group)
        except UserError as exc:
            if not str(exc).startswith(str(path)):
                exc = UserError(f"{path}: {exc}")
            failures.append(str(exc))
            if as_json:
                print_json_line({"file": str(path), "imported": 0, "error": str(exc)})
            continue
        from patchflow.scanning import register_inventory_hook

        register_inventory_hook()  # imported endpoints are rescanned before the command ends
        fleet.run_inventory_hooks(ids)
        if as_json:
            print_json_line({"file": str(path), "imported": len(ids), "error": None})
        else:
            console.print(f"imported {len(ids)} endpoint(s) from {path}")
    if failures and as_json:  # each failure is in its file's line; stderr says how many
        raise UserError(f"{len(failures)} of {len(files)} file(s) not imported")
    if failures:
        if len(failures) == 1:
            raise UserError(failures[0])
        for message in failures:
            print(f"error: {strip_controls(message)}", file=sys.stderr)
        raise typer.Exit(2)


@endpoints_app.command("move")
def endpoints_move(
    hostname: str,
    group: str = typer.Option(..., "--group", help="Destination group"),
) -> None:
    """Move an endpoint to another group (its policy follows the group)."""
    from patchflow import fleet

    with db_session() as session:
        endpoint = fleet.move_endpoint(session, hostname, group)
        name = endpoint.hostname
    console.print(f"moved {plain(name)} to group {plain(group)}")


@endpoints_app.command("revoke")
def endpoints_revoke(hostname: str) -> None:
    """Cut an endpoint's agent off immediately; it must re-enroll with a new token."""
    from patchflow import fleet

    with db_session() as session:
        endpoint = fleet.revoke_endpoint(session, hostname)
        name = endpoint.hostname
    console.print(f"revoked the agent of {plain(name)}")


@endpoints_app.command("approve-reenroll")
def endpoints_approve_reenroll(
    hostname: str = typer.Argument(None, help="The endpoint (see `endpoints list`)"),
    unrevoke: bool = typer.Option(
        False, "--unrevoke", help="Also lift the endpoint's revocation (refused without it)"),
    approve_all: bool = typer.Option(
        False, "--all", help="Every pending re-enrolment of an endpoint that is not revoked"),
) -> None:
    """Let the agent waiting to re-enroll HOST replace its current agent (a reinstalled
    machine): the endpoint keeps its name, group and history; the old agent's secret dies."""
    from patchflow import fleet

    if approve_all == bool(hostname):
        raise UserError("give either HOST or --all")
    if approve_all and unrevoke:
        raise UserError("--unrevoke takes one HOST, not --all")
    with db_session() as session:
        if approve_all:
            approved, skipped = fleet.approve_all_reenrollments(session)
        else:
            approved = [fleet.approve_reenrollment(session, hostname, unrevoke=unrevoke).hostname]
            skipped = []
    for name in approved:
        console.print(f"approved the re-enrolment of {plain(name)}: its new agent is now the "
                      "endpoint's agent")
    if approve_all and not approved:
        console.print("no re-enrolment to approve")
    for name in skipped:
        print(f"skipped {name}: revoked (approve-reenroll {name} --unrevoke)", file=sys.stderr)


@endpoints_app.command("reject-reenroll")
def endpoints_reject_reenroll(hostname: str) -> None:
    """Refuse the agent waiting to re-enroll HOST: its credentials stop working and the
    endpoint stays exactly as it was."""
    from patchflow import fleet

    with db_session() as session:
        name = fleet.reject_reenrollment(session, hostname)
    console.print(f"rejected the re-enrolment of {plain(name)}")


# --- groups ---------------------------------------------------------------------------------


@groups_app.command("add")
def groups_add(
    name: str,
    parent: str = typer.Option(None, "--parent", help="Make it a subgroup of this group"),
) -> None:
    """Add a group."""
    from patchflow import fleet

    with db_session() as session:
        fleet.add_group(session, name, parent)
    console.print(f"added group {plain(name)}" + (f" under {plain(parent)}" if parent else ""))


@groups_app.command("list")
def groups_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List groups as a tree, with their own and inherited policy."""
    from patchflow import fleet

    with db_session() as session:
        rows = fleet.list_groups(session)
    if as_json:
        print_json(rows)
        return
    print_table(
        "Groups", ["Group", "Policy", "Effective policy", "Endpoints"],
        [["  " * (r["path"].count("/")) + r["name"], r["policy"], r["effective_policy"],
          r["endpoints"]] for r in rows],
    )


# --- policies -------------------------------------------------------------------------------

PATCH_SERVER = typer.Option(None, "--patch-server", help="Patch server the endpoints use")
GROUPS = typer.Option(None, "--groups", help="Comma-separated groups that get this policy")
ROAMING = typer.Option(None, "--roaming-microsoft/--no-roaming-microsoft",
                       help="Roaming endpoints use Microsoft Update")
WEEKDAY = typer.Option(None, "--scan-weekday", help="monday ... sunday")
SCAN_AT = typer.Option(None, "--scan-at", help="HH:MM (24-hour)")
EVERY = typer.Option(None, "--scan-every-weeks", help="Scan every N weeks (default 1)")
MISSED = typer.Option(None, "--run-if-missed/--no-run-if-missed",
                      help="Run a missed scheduled scan at start-up")
AUTO_INSTALL = typer.Option(None, "--auto-install/--no-auto-install",
                            help="Install missing patches automatically")
AUTO_RESTART = typer.Option(None, "--auto-restart/--no-auto-restart",
                            help="Allow automatic restarts")


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        console.print(f"note: {plain(note)}")


@policies_app.command("add")
def policies_add(
    name: str,
    patch_server: str = PATCH_SERVER,
    groups: str = GROUPS,
    roaming_microsoft: bool = ROAMING,
    scan_weekday: str = WEEKDAY,
    scan_at: str = SCAN_AT,
    scan_every_weeks: int = EVERY,
    run_if_missed: bool = MISSED,
    auto_install: bool = AUTO_INSTALL,
    auto_restart: bool = AUTO_RESTART,
) -> None:
    """Add a policy and apply it to groups."""
    from patchflow import fleet

    opts = fleet.PolicyOptions(
        patch_server=patch_server, groups=split_csv(groups), roaming_microsoft=roaming_microsoft,
        scan_weekday=scan_weekday, scan_at=scan_at, scan_every_weeks=scan_every_weeks,
        run_if_missed=run_if_missed, auto_install=auto_install, auto_restart=auto_restart,
    )
    with db_session() as session:
        _policy, notes = fleet.add_policy(session, name, opts)
    console.print(f"added policy {name}")
    _print_notes(notes)


@policies_app.command("edit")
def policies_edit(
    name: str,
    patch_server: str = PATCH_SERVER,
    groups: str = GROUPS,
    roaming_microsoft: bool = ROAMING,
    scan_weekday: str = WEEKDAY,
    scan_at: str = SCAN_AT,
    scan_every_weeks: int = EVERY,
    clear_schedule: bool = typer.Option(False, "--clear-schedule",
                                        help="Remove the scan schedule"),
    run_if_missed: bool = MISSED,
    auto_install: bool = AUTO_INSTALL,
    auto_restart: bool = AUTO_RESTART,
) -> None:
    """Change a policy (only the options given; --groups replaces the group list)."""
    from patchflow import fleet

    opts = fleet.PolicyOptions(
        patch_server=patch_server, groups=split_csv(groups), roaming_microsoft=roaming_microsoft,
        scan_weekday=scan_weekday, scan_at=scan_at, scan_every_weeks=scan_every_weeks,
        clear_schedule=clear_schedule, run_if_missed=run_if_missed, auto_install=auto_install,
        auto_restart=auto_restart,
    )
    with db_session() as session:
        _policy, notes = fleet.edit_policy(session, name, opts)
    console.print(f"updated policy {name}")
    _print_notes(notes)


@policies_app.command("list")
def policies_list(as_json: bool = typer.Option(False, "--json", help="JSON output")) -> None:
    """List policies."""
    from patchflow import fleet

    with db_session() as session:
        rows = fleet.list_policies(session)
    if as_json:
        print_json(rows)
        return

    def schedule(row: dict[str, Any]) -> str:
        s = row["scan_schedule"]
        if not s:
            return ""
        every = f" every {s['every_weeks']} weeks" if s["every_weeks"] > 1 else " weekly"
        return f"{s['weekday']} {s['at']}{every}"

    print_table(
        "Policies",
        ["Policy", "Patch server", "Groups", "Roaming → Microsoft", "Scan", "Run if missed",
         "Auto install", "Auto restart"],
        [[r["name"], r["patch_server"], ", ".join(r["groups"]),
          "yes" if r["roaming_microsoft"] else "no", schedule(r),
          "yes" if r["run_if_missed"] else "no", "yes" if r["auto_install"] else "no",
          "yes" if r["auto_restart"] else "no"] for r in rows],
    )


@policies_app.command("delete")
def policies_delete(
    name: str,
    yes: bool = typer.Option(False, "--yes", help="Confirm deletion"),
) -> None:
    """Delete a policy; its groups are left without one (they inherit from their parents)."""
    from patchflow import fleet

    if not yes:
        raise UserError(f"deleting policy {name!r} needs --yes")
    with db_session() as session:
        fleet.delete_policy(session, name)
    console.print(f"deleted policy {name}")
