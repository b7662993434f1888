"""`patchflow install …`, `patchflow eula …` and `patchflow jobs …`: the Patch Install view,
EULAs and install jobs. Thin wrappers over patchflow.install, like the admin API."""

from __future__ import annotations

import getpass
import os
from typing import Any

import typer

from cli.common import console, db_session, plain, print_json, print_table, split_csv
from patchflow.errors import UserError
from patchflow.ops import audit

install_app = typer.Typer(help="Select missing patches and install them.", no_args_is_help=True)
eula_app = typer.Typer(help="Patch EULAs: read, accept.", no_args_is_help=True)
jobs_app = typer.Typer(help="Install jobs: list, show, cancel, resume.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(install_app, name="install")
    app.add_typer(eula_app, name="eula")
    app.add_typer(jobs_app, name="jobs")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# --- install ----------------------------------------------------------------------------------


@install_app.command("list")
def list_(
    group: str = typer.Option(None, "--group"),
    subgroups: bool = typer.Option(False, "--subgroups", help="Include the group's subgroups"),
    severity: str = typer.Option(None, "--severity", help="Comma-separated severities"),
    category: str = typer.Option(None, "--category", help="Comma-separated categories"),
    restart: str = typer.Option(None, "--restart", help="Required,Not Required,May Require"),
    eula: str = typer.Option(None, "--eula", help="accepted | not-accepted"),
    exploited: bool = typer.Option(False, "--exploited",
                                   help="Only patches fixing a CVE exploited in the wild"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Missing patches, one row each: endpoints affected and how many are selected."""
    from patchflow.install import install_list
    from patchflow.scanning.missing_query import MissingFilters

    filters = MissingFilters(
        group=group, subgroups=subgroups, severity=tuple(split_csv(severity) or ()),
        category=tuple(split_csv(category) or ()), restart=tuple(split_csv(restart) or ()),
        eula=eula, exploited=exploited)
    with db_session() as session:
        rows = install_list(session, filters)
    if as_json:
        print_json(rows)
        return
    print_table(f"{len(rows)} missing patches",
                ["Patch", "Severity", "Exploited", "Category", "Restart", "EULA", "Endpoints",
                 "Selected", "Title"],
                [[r["patch"], r["severity"], "yes" if r["exploited"] else "", r["category"],
                  r["restart_required"], r["eula_status"], r["endpoints"], r["selected"],
                  r["title"]] for r in rows])


@install_app.command("show")
def show(
    patch: str = typer.Argument(..., help="id, KB, PACKAGE@VERSION (or PACKAGE)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A patch's details and the endpoints it is missing on."""
    from patchflow.install import install_show

    with db_session() as session:
        data = install_show(session, patch)
    if as_json:
        print_json(data)
        return
    console.print(f"[bold]{plain(data['title'])}[/bold]  ({plain(data['patch'])}, #{data['id']})",
                  highlight=False)
    for key in ("severity", "category", "restart_required", "eula_status", "release_date"):
        if data.get(key):
            console.print(f"  {key}: {plain(data[key])}", highlight=False)
    console.print(f"  missing on {data['endpoints_affected']} endpoint(s), "
                  f"{data['endpoints_selected']} selected", highlight=False)
    print_table("Endpoints affected",
                ["Endpoint", "Group", "Installed", "Available", "Selected", "Reason"],
                [[e["endpoint"], e["group"], e["installed_version"], e["available_version"],
                  "yes" if e["selected"] else "", e["reason"]] for e in data["endpoints"]])


@install_app.command("select")
def select(
    patch: str = typer.Argument(..., help="id, KB, PACKAGE@VERSION (or PACKAGE)"),
    endpoints: str = typer.Option(None, "--endpoints", help="H1,H2,..."),
    all_affected: bool = typer.Option(False, "--all-affected",
                                      help="Every endpoint the patch is missing on"),
) -> None:
    """Add (patch, endpoint) pairs to the selection; it persists until start or refresh."""
    from patchflow.install import select_pairs

    with db_session() as session:
        out = select_pairs(session, patch, split_csv(endpoints), all_affected, _user())
    console.print(f"{plain(out['patch'])}: {out['added']} endpoint(s) added, {out['selected']} "
                  "selected", highlight=False)
    if out["note"]:
        console.print(f"note: {out['note']}", highlight=False, markup=False)


@install_app.command("unselect")
def unselect(
    patch: str = typer.Argument(...),
    endpoints: str = typer.Option(None, "--endpoints", help="H1,H2 (default: all of them)"),
) -> None:
    """Remove a patch (for some endpoints) from the selection."""
    from patchflow.install import unselect_pairs

    with db_session() as session:
        out = unselect_pairs(session, patch, split_csv(endpoints))
    console.print(f"{plain(out['patch'])}: {out['removed']} removed, {out['selected']} still "
                  "selected", highlight=False)


@install_app.command("refresh")
def refresh() -> None:
    """Clear the selection."""
    from patchflow.install import refresh_selection

    with db_session() as session:
        removed = refresh_selection(session)
    console.print(f"selection cleared ({removed} pair(s) removed)")


@install_app.command("start")
def start(
    allow_restart: bool = typer.Option(False, "--allow-restart/--no-restart",
                                       help="May endpoints restart to finish (default: no)"),
    wait: bool = typer.Option(False, "--wait", help="Run the job here until it ends"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Turn the selection into an install job and start it."""
    from patchflow.install import start_from_selection

    with db_session() as session:
        job_id = start_from_selection(session, _user(), allow_restart).id
        audit.record(session, audit.cli_actor(), "install.start", f"job {job_id}", source="cli")
    _run_or_launch(job_id, wait, as_json)


@install_app.command("now")
def now(
    patch: str = typer.Argument(...),
    endpoints: str = typer.Option(None, "--endpoints", help="H1,H2,..."),
    all_affected: bool = typer.Option(False, "--all-affected"),
    allow_restart: bool = typer.Option(False, "--allow-restart/--no-restart"),
    wait: bool = typer.Option(False, "--wait", help="Run the job here until it ends"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Select and start in one step (the rest of the selection is left alone)."""
    from patchflow.install import install_now

    with db_session() as session:
        job_id = install_now(session, patch, split_csv(endpoints), all_affected, _user(),
                             allow_restart).id
        audit.record(session, audit.cli_actor(), "install.start", f"job {job_id}",
                     f"patch {patch}", source="cli")
    _run_or_launch(job_id, wait, as_json)


@install_app.command("rollback")
def rollback(
    patch: str = typer.Argument(..., help="id, KB or PACKAGE@VERSION"),
    endpoints: str = typer.Option(None, "--endpoints", help="H1,H2,..."),
    ring: str = typer.Option(None, "--ring", help="A policy's ring: RING or POLICY/RING"),
    allow_restart: bool = typer.Option(False, "--allow-restart/--no-restart"),
    wait: bool = typer.Option(False, "--wait", help="Run the job here until it ends"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Uninstall a patch from endpoints (an audited job): wusa for a KB, msiexec for an MSI;
    an exe only with its UninstallString and known silent switches, else refused."""
    from patchflow.install.rollback import create_rollback

    with db_session() as session:
        job, out = create_rollback(session, patch, split_csv(endpoints), ring, _user(),
                                   allow_restart=allow_restart)
        job_id = job.id
        refused = "; ".join(f"{h}: {why}" for h, why in out["refused"].items())
        audit.record(session, audit.cli_actor(), "install.rollback", f"job {job_id}",
                     f"patch {out['patch']} on {out['scope']}"
                     + (f"; refused: {refused}" if refused else ""), source="cli")
    if not as_json:
        for host, why in out["refused"].items():
            console.print(f"refused on {host}: {why}", highlight=False, markup=False)
        if out["skipped"]:
            console.print(f"not installed on {len(out['skipped'])} endpoint(s) of the ring: "
                          + ", ".join(out["skipped"][:10]), highlight=False, markup=False)
    _run_or_launch(job_id, wait, as_json, {"action": "uninstall", **out}, "rollback job")


def _run_or_launch(job_id: int, wait: bool, as_json: bool, extra: dict[str, Any] | None = None,
                   noun: str = "install job") -> None:
    if not wait:
        from patchflow.install.launch import launch, log_path

        pid = launch(job_id)
        if as_json:
            print_json({"job_id": job_id, "status": "started", "pid": pid,
                        "log": str(log_path(job_id)), **(extra or {})})
            return
        console.print(f"{noun} {job_id} started (flow in process {pid}, log "
                      f"{log_path(job_id)}); follow it with `patchflow jobs show {job_id}`",
                      highlight=False)
        return
    summary = _run_flow(job_id)
    if as_json:
        print_json({**summary, **(extra or {})})
        return
    console.print(f"{noun} {job_id} {plain(summary['status'])}: {plain(summary['summary'])} "
                  f"({summary['items']} items)", highlight=False)


def _run_flow(job_id: int) -> dict[str, Any]:
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    from flows.install import install

    with console.status(f"install job {job_id} running…"):
        return install(job_id)


# --- eula -------------------------------------------------------------------------------------


@eula_app.command("show")
def eula_show(patch: str = typer.Argument(...),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Whether a patch needs a EULA, where to read it, and who accepted it when."""
    from patchflow.install import show_eula

    with db_session() as session:
        info = show_eula(session, patch)
    if as_json:
        print_json(info)
        return
    _print_eula(info)


def _print_eula(info: dict[str, Any]) -> None:
    console.print(f"{plain(info['patch'])} ({plain(info['title'])})", highlight=False)
    if not info["eula_required"]:
        console.print("  no EULA: installable without acceptance")
        return
    console.print(f"  EULA: {plain(info['eula_url'] or '(the vendor gives no URL)')}",
                  highlight=False)
    if info["accepted_by"]:
        console.print(f"  Accepted by {plain(info['accepted_by'])} at {info['accepted_at']}",
                      highlight=False)
    else:
        console.print(f"  Not Accepted: `patchflow eula accept {info['patch']}` after reading "
                      "it", highlight=False, markup=False)


@eula_app.command("accept")
def eula_accept(patch: str = typer.Argument(...),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Accept a patch's EULA; your user name and the time are recorded."""
    from patchflow.install import accept_eula

    with db_session() as session:
        info = accept_eula(session, patch, _user())
    if as_json:
        print_json(info)
        return
    if info["note"]:
        console.print(f"note: {info['note']}", highlight=False, markup=False)
    _print_eula(info)


# --- jobs -------------------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(limit: int = typer.Option(50, "--limit", min=1, max=1000),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """Install jobs, newest first."""
    from patchflow.install import list_jobs

    with db_session() as session:
        rows = list_jobs(session, limit)
    if as_json:
        print_json(rows)
        return
    print_table(f"{len(rows)} install jobs",
                ["Job", "Outcome", "Trigger", "By", "Created", "Restart", "Items", "Summary"],
                [[r["id"], r["outcome"],
                  r["trigger"] + (" (rollback)" if r.get("action") == "uninstall" else ""),
                  r["created_by"], r["created_at"][:19],
                  "allowed" if r["allow_restart"] else "no", r["items"], r["summary"]]
                 for r in rows])


def _job_id(value: str) -> int:
    if not value.strip().isdigit():
        raise UserError(f"invalid job id {value!r}: expected a number (see `patchflow jobs list`)")
    return int(value)


@jobs_app.command("show")
def jobs_show(job: str = typer.Argument(..., help="Job id"),
              as_json: bool = typer.Option(False, "--json")) -> None:
    """A job with its items: state, attempts, exit code and message (JSON adds the events)."""
    from patchflow.install import show_job

    with db_session() as session:
        data = show_job(session, _job_id(job), events=as_json)
    if as_json:
        print_json(data)
        return
    noun = "rollback job" if data.get("action") == "uninstall" else "install job"
    console.print(f"{noun} {data['id']}: {plain(data['status'])} ({plain(data['trigger'])}, "
                  f"by {plain(data['created_by'])}, restart "
                  f"{'allowed' if data['allow_restart'] else 'no'}; {plain(data['summary'])}",
                  highlight=False)
    print_table(None, ["Endpoint", "Patch", "State", "Attempts", "Exit", "Message"],
                [[i["endpoint"], i["patch"], i["state"], i["attempts"], i["exit_code"],
                  i["message"]] for i in data["items_detail"]])


@jobs_app.command("cancel")
def jobs_cancel(job: str = typer.Argument(..., help="Job id"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Cancel the items not finished yet (installs already running finish and are recorded)."""
    from patchflow.install import cancel_job

    with db_session() as session:
        data = cancel_job(session, _job_id(job), _user())
        audit.record(session, audit.cli_actor(), "job.cancel", f"job {data['id']}", source="cli")
    if as_json:
        print_json(data)
        return
    console.print(f"install job {data['id']} cancelled: {data['cancelled_items']} item(s) "
                  f"cancelled; {plain(data['summary'])}", highlight=False)


@jobs_app.command("resume")
def jobs_resume(job: str = typer.Argument(None, help="Job id (default: every unfinished job)"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """Run the install flow for a job whose flow stopped (a server restart): it continues
    where the database says it is."""
    from patchflow.install import states
    from patchflow.install.dispatch import unfinished_jobs
    from patchflow.install.jobs import get_job

    with db_session() as session:  # bad input fails here, before Prefect starts
        if job:
            found = get_job(session, _job_id(job))
            if found.status in states.JOB_FINAL:
                raise UserError(f"install job {found.id} is already {found.status}")
    ids = [_job_id(job)] if job else unfinished_jobs()
    if not ids:
        if as_json:
            print_json([])
        else:
            console.print("no unfinished install job")
        return
    summaries = [_run_flow(job_id) for job_id in ids]
    if as_json:
        print_json(summaries)
        return
    for s in summaries:
        console.print(f"install job {s['job_id']} {plain(s['status'])}: {plain(s['summary'])}",
                      highlight=False)
