"""`patchflow endpoints`: list, show, import, move and revoke endpoints, and approve or reject
their re-enrolments. Each command is a thin wrapper over patchflow.fleet, like the admin API;
the group's `token` commands live in cli/tokens.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from cli.common import console, db_session, plain, print_json, print_json_line, print_table
from patchflow.errors import UserError
from patchflow.untrusted import strip_controls

endpoints_app = typer.Typer(help="Endpoints: enrollment tokens, inventories, groups, revocation.")


def register(app: typer.Typer) -> None:
    app.add_typer(endpoints_app, name="endpoints")


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
    from patchflow.catalog.ms_products import endpoint_ms_products

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
    from patchflow.fleet.inventory import validate_documents

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
        from patchflow.scanning.service import register_inventory_hook

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
