"""`patchflow approve|unapprove|decline|undecline`, `patchflow approvals list` and
`patchflow rules …`: thin wrappers over patchflow.install.approvals and
patchflow.install.approval_rules."""

from __future__ import annotations

import typer

from cli.common import console, db_session, plain, print_json, print_table, split_csv
from patchflow.errors import UserError
from patchflow.ops import audit

approvals_app = typer.Typer(help="Patch approvals and declines.", no_args_is_help=True)
rules_app = typer.Typer(help="Automatic approval rules.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("approve")(approve)
    app.command("unapprove")(unapprove)
    app.command("decline")(decline)
    app.command("undecline")(undecline)
    app.add_typer(approvals_app, name="approvals")
    app.add_typer(rules_app, name="rules")


PATCH_HELP = "A KB (KB5094126), PACKAGE@VERSION or a patch id"


def approve(
    patch: str = typer.Argument(..., help=PATCH_HELP),
    groups: str = typer.Option(..., "--groups", help="G1,G2: the groups it is approved for"),
    deadline: str = typer.Option(None, "--deadline", help="Install by YYYY-MM-DD"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Approve a patch for groups (and their subgroups)."""
    from patchflow.install.approvals import approve as approve_

    with db_session() as session:
        out = approve_(session, patch, split_csv(groups), audit.cli_actor(), deadline)
    if as_json:
        print_json(out)
        return
    console.print(f"{plain(out['patch'])} approved for {plain(', '.join(out['groups']))}"
                  + (f", deadline {out['deadline']}" if out["deadline"] else ""),
                  highlight=False)


def unapprove(
    patch: str = typer.Argument(..., help=PATCH_HELP),
    groups: str = typer.Option(..., "--groups", help="G1,G2"),
) -> None:
    """Withdraw a manual approval for groups."""
    from patchflow.install.approvals import unapprove as unapprove_

    with db_session() as session:
        out = unapprove_(session, patch, split_csv(groups), audit.cli_actor())
    console.print(f"{plain(out['patch'])}: {out['removed']} approval(s) withdrawn",
                  highlight=False)


def decline(
    patch: str = typer.Argument(None, help=PATCH_HELP),
    reason: str = typer.Option(None, "--reason", help="Why (kept with the decline)"),
    superseded: bool = typer.Option(False, "--superseded",
                                    help="Decline every superseded patch"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Decline a patch: it is no longer offered nor counted as missing."""
    from patchflow.install.approvals import decline as decline_
    from patchflow.install.approvals import decline_superseded

    if bool(patch) == superseded:
        raise UserError("give a PATCH or --superseded (one of them)")
    with db_session() as session:
        out = (decline_superseded(session, audit.cli_actor()) if superseded
               else decline_(session, patch, audit.cli_actor(), reason))
    if as_json:
        print_json(out)
    elif superseded:
        console.print(f"{out['count']} superseded patch(es) declined", highlight=False)
    else:
        console.print(f"{plain(out['patch'])} "
                      + ("was already declined" if out["already"] else "declined"),
                      highlight=False)


def undecline(patch: str = typer.Argument(..., help=PATCH_HELP)) -> None:
    """Offer a declined patch again."""
    from patchflow.install.approvals import undecline as undecline_

    with db_session() as session:
        out = undecline_(session, patch, audit.cli_actor())
    console.print(f"{plain(out['patch'])} is offered again", highlight=False)


@approvals_app.command("list")
def list_(
    group: str = typer.Option(None, "--group", help="Only approvals for this group"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Manual approvals (and, without --group, declines): who, when, why."""
    from patchflow.install.approvals import list_approvals

    with db_session() as session:
        rows = list_approvals(session, group)
    if as_json:
        print_json(rows)
        return
    print_table(f"{len(rows)} approvals and declines",
                ["Patch", "Kind", "Group", "Deadline", "By", "At", "Why"],
                [[r["patch"], r["kind"], r["group"], r["deadline"], r["by"], r["at"][:19],
                  r["why"]] for r in rows])


# --- rules -------------------------------------------------------------------------------------


@rules_app.command("add")
def rules_add(
    name: str = typer.Argument(..., help="A short name, e.g. critical-security"),
    groups: str = typer.Option(..., "--groups", help="G1,G2: groups the rule approves for"),
    severity: str = typer.Option(None, "--severity", help="Comma-separated severities"),
    category: str = typer.Option(None, "--category", help="Comma-separated categories"),
    products: str = typer.Option(None, "--products", help="Comma-separated products"),
    exploited: bool = typer.Option(False, "--exploited",
                                   help="Only patches fixing a CVE exploited in the wild"),
    delay_days: int = typer.Option(0, "--delay-days", help="Approve N days after release"),
    deadline_days: int = typer.Option(None, "--deadline-days",
                                      help="Deadline N days after approval"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add an automatic approval rule."""
    from patchflow.install.approval_rules import add_rule

    with db_session() as session:
        out = add_rule(session, name, split_csv(groups), audit.cli_actor(),
                       severities=split_csv(severity), categories=split_csv(category),
                       products=split_csv(products), exploited=exploited,
                       delay_days=delay_days, deadline_days=deadline_days)
    if as_json:
        print_json(out)
        return
    console.print(f"rule {plain(out['name'])} added: {plain(out['description'])}",
                  highlight=False)


@rules_app.command("list")
def rules_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """The automatic approval rules."""
    from patchflow.install.approval_rules import list_rules

    with db_session() as session:
        rows = list_rules(session)
    if as_json:
        print_json(rows)
        return
    print_table(f"{len(rows)} approval rules", ["Rule", "Approves", "By"],
                [[r["name"], r["description"], r["created_by"]] for r in rows])


@rules_app.command("delete")
def rules_delete(name: str = typer.Argument(...)) -> None:
    """Delete a rule (what it approved before is not installed by later cycles)."""
    from patchflow.install.approval_rules import delete_rule

    with db_session() as session:
        delete_rule(session, name, audit.cli_actor())
    console.print(f"rule {plain(name)} deleted", highlight=False)


@rules_app.command("preview")
def rules_preview(
    name: str = typer.Argument(...),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """What the rule would approve now, and why."""
    from patchflow.install.approval_rules import preview_rule

    with db_session() as session:
        out = preview_rule(session, name)
    if as_json:
        print_json(out)
        return
    rows = out["approves"]
    print_table(f"rule {out['rule']['name']} approves {len(rows)} patch(es)",
                ["Patch", "Severity", "Missing on", "Deadline", "Why"],
                [[r["patch"], r["severity"], r["endpoints_missing"], r["deadline"], r["why"]]
                 for r in rows])
    for note in out["notes"]:
        console.print(f"note: {note}", highlight=False, markup=False)
