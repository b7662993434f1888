"""`patchflow cycle run|list|show|resume|schedule`: the patch cycle of a policy (flows/cycle.py).

`run` checks the policy and that no other cycle of it is going before Prefect starts, so bad
input is one line and exit 2. With --wait (or --dry-run, which is quick) the flow runs here;
without, a detached process runs it (patchflow.cycle.launch) and the run's
id is printed for `cycle show`. `resume` answers a run paused at a manual gate through the
Prefect API (the same as Resume in the Prefect UI).
"""

from __future__ import annotations

import os
from typing import Any

import typer

from cli.common import console, db_session, plain, print_json, print_table, split_csv
from patchflow.ops import audit

cycle_app = typer.Typer(help="The patch cycle: sync, scan, approve, install, verify, report.",
                        no_args_is_help=True)


rings_app = typer.Typer(help="A policy's deployment rings, in order.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(cycle_app, name="cycle")
    cycle_app.add_typer(rings_app, name="rings")


@cycle_app.command("run")
def run(
    policy: str = typer.Argument(..., help="The policy whose cycle runs"),
    dry_run: bool = typer.Option(False, "--dry-run",
                                 help="Sync, scan and approve; print the plan, install nothing"),
    wait: bool = typer.Option(False, "--wait", help="Run the cycle here until it ends"),
    as_json: bool = typer.Option(False, "--json"),
    run_id: int = typer.Option(None, "--run-id", hidden=True),
) -> None:
    """Run a policy's patch cycle."""
    from patchflow.cycle import runs

    if run_id is None:
        with db_session() as session:
            run_id = runs.request(session, policy, dry_run, audit.cli_actor()).id
    if not (wait or dry_run):
        from patchflow.cycle.launch import spawn

        pid = spawn(run_id, policy)
        with db_session() as session:
            out = runs.to_dict(runs.get_run(session, run_id))
        out["pid"] = pid
        if as_json:
            print_json(out)
        else:
            console.print(f"cycle run {run_id} of {plain(policy)} started (process {pid}); "
                          f"`patchflow cycle show {run_id}` follows it", highlight=False)
        return
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from flows.cycle import cycle

    error: str | None = None
    try:
        with console.status("running the patch cycle…"):
            cycle(policy, dry_run=dry_run, run_id=run_id, started_by=audit.cli_actor())
    except Exception as exc:  # the run's record says what failed; printed below
        error = (str(exc).splitlines() or [type(exc).__name__])[0][:500]
    with db_session() as session:
        out = runs.to_dict(runs.settle(session, run_id, error))
    _print_run(out, as_json)
    if out["state"] != runs.COMPLETED:
        raise typer.Exit(1)


def _print_run(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(out)
        return
    console.print(f"cycle run {out['run']} of {plain(out['policy'])}: {plain(out['state'])}"
                  + (f" ({plain(out['message'])})" if out.get("message") else ""),
                  highlight=False)
    print_table("Steps", ["Step", "State", "Summary"],
                [[s["name"], s["state"], s["summary"]] for s in out["steps"]])
    if out.get("plan"):
        print_table("Plan", ["Ring", "Patch", "Endpoints", "Why approved"],
                    [[p["ring"], p["patch"], ", ".join(p["endpoints"]), p["why"]]
                     for p in out["plan"]])


@cycle_app.command("list")
def list_(
    policy: str = typer.Option(None, "--policy"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cycle runs, newest first."""
    from patchflow.cycle import runs

    with db_session() as session:
        rows = runs.list_runs(session, policy)
    if as_json:
        print_json(rows)
        return
    print_table(f"{len(rows)} cycle runs", ["Run", "Policy", "State", "Dry run", "Started",
                                            "Steps"],
                [[r["run"], r["policy"], r["state"], "yes" if r["dry_run"] else "",
                  r["started_at"][:19], ", ".join(f"{s['name']} {s['state'].lower()}"
                                                  for s in r["steps"])] for r in rows])


@cycle_app.command("show")
def show(
    run_id: str = typer.Argument(..., help="A cycle run id (or its Prefect flow run id)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One cycle run: its steps and its plan."""
    from patchflow.cycle import runs

    with db_session() as session:
        out = runs.to_dict(runs.get_run(session, run_id))
    _print_run(out, as_json)


@cycle_app.command("resume")
def resume(
    run_id: str = typer.Argument(..., help="The paused cycle run (or its Prefect flow run id)"),
    reject: bool = typer.Option(False, "--reject",
                                help="Halt the cycle here; later rings are left untouched"),
    reason: str = typer.Option("", "--reason", help="Why (kept in the run and the audit log)"),
    as_json: bool = typer.Option(False, "--json", help="Print the answer as one JSON object"),
) -> None:
    """Answer a cycle run waiting at a manual gate: go on with the ring, or --reject."""
    from patchflow.cycle.gate import answer

    with db_session():  # the database is initialised and current, else a one-line error
        pass
    number = answer(run_id, not reject, reason, audit.cli_actor())
    if as_json:
        print_json({"run": number, "decision": "reject" if reject else "resume",
                    "reason": reason.strip() or None})
        return
    console.print(f"cycle run {number} {'rejected at' if reject else 'resumed past'} its gate; "
                  f"`patchflow cycle show {number}` follows it", highlight=False)


@cycle_app.command("schedule")
def schedule(
    policy: str = typer.Argument(...),
    enable: bool = typer.Option(True, "--enable/--disable",
                                help="Run the cycle on the policy's schedule (--disable: a "
                                     "bare scan again)"),
) -> None:
    """Run a policy's cycle on its schedule (`policies edit --scan-weekday/--scan-at`)."""
    from patchflow.cycle.plan import get_policy

    with db_session() as session:
        pol = get_policy(session, policy)
        if enable and not (pol.scan_weekday and pol.scan_at):
            from patchflow.errors import UserError

            raise UserError(f"policy {pol.name} has no schedule: set one with `patchflow "
                            "policies edit POLICY --scan-weekday DAY --scan-at HH:MM`")
        pol.cycle_scheduled = enable
        audit.record(session, audit.cli_actor(), "cycle.schedule", pol.name,
                     "enabled" if enable else "disabled", source="cli")
        name, auto = pol.name, pol.auto_install
    if enable:
        console.print(f"policy {plain(name)}: its schedule runs the patch cycle "
                      + ("(installs unattended: automatic install is on)" if auto else
                         "(pauses before installing: automatic install is off)"),
                      highlight=False)
    else:
        console.print(f"policy {plain(name)}: its schedule runs a scan", highlight=False)


@rings_app.command("add")
def rings_add(
    policy: str = typer.Argument(...),
    name: str = typer.Argument(..., help="The ring's name, e.g. pilot"),
    groups: str = typer.Option(..., "--groups", help="G1,G2: the ring's groups"),
    delay_minutes: int = typer.Option(0, "--delay-minutes",
                                      help="Wait after the ring before it passed its gate"),
    min_success_rate: int = typer.Option(95, "--min-success-rate",
                                         help="Percent of the ring before that must succeed"),
    gate: str = typer.Option("rate", "--gate",
                             help="rate (the success rate decides) or manual (the cycle "
                                  "pauses before this ring until `cycle resume`)"),
) -> None:
    """Append a ring to a policy (the first ring added is the pilot)."""
    from patchflow.cycle.rings import add_ring

    with db_session() as session:
        out = add_ring(session, policy, name, split_csv(groups), audit.cli_actor(),
                       delay_minutes, min_success_rate, gate)
    console.print(f"policy {plain(out['policy'])}: rings "
                  + " → ".join(plain(r["name"]) for r in out["rings"]), highlight=False)


@rings_app.command("list")
def rings_list(policy: str = typer.Argument(...),
               as_json: bool = typer.Option(False, "--json")) -> None:
    """A policy's rings, in order."""
    from patchflow.cycle.rings import list_rings

    with db_session() as session:
        rows = list_rings(session, policy)
    if as_json:
        print_json(rows)
        return
    print_table(f"{len(rows)} rings", ["#", "Ring", "Groups", "Delay (min)", "Gate"],
                [[r["position"], r["name"], ", ".join(r["groups"]), r["delay_minutes"],
                  "manual" if r["gate"] == "manual" else f"{r['min_success_rate']} %"]
                 for r in rows])


@rings_app.command("delete")
def rings_delete(policy: str = typer.Argument(...), name: str = typer.Argument(...)) -> None:
    """Remove a ring from a policy."""
    from patchflow.cycle.rings import delete_ring

    with db_session() as session:
        delete_ring(session, policy, name, audit.cli_actor())
    console.print(f"ring {plain(name)} removed", highlight=False)
