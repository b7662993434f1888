"""The `patchflow-cycle` flow: one governed run per policy, from sync to report.

    sync (if stale) → scan → approve → install → verify → report

Each step is a sub-flow (sync, scan, install: the same flows that run alone) or a task over
the whole policy, and each ends with a markdown and a table artifact, so the Prefect UI shows
the run as one parent with its children and explains every step. The report step runs after
the install and the verification rescan it reports on, by construction. One cycle per policy
runs at a time (patchflow.cycle.runs). A run from the Prefect UI (Quick run) is a manual run;
`install=False` makes it plan without installing, like `--dry-run`.

A manual gate is Prefect's own pause with input (`pause_flow_run(wait_for_input=...)`): the run
shows Paused in the Prefect UI with a Resume form, and `patchflow cycle resume RUN [--reject]`
resumes it through the API with the decision. The pause keeps the flow's process waiting (an
in-process pause: the cycle is not a deployment-only flow, so Prefect's suspend, which ends the
process and reruns the flow from its deployment, does not apply), and the run record says
Paused meanwhile. A scheduled run of a policy whose automatic install is off pauses the same
way before its first ring: the schedule prepares the installs, an administrator releases them.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import flow_run

from deployments.orphans import record_process
from flows.feeds import sync_stale_feeds
from flows.install import install as install_flow
from flows.report import report_flow
from flows.scan import scan as scan_flow
from flows.sync import sync as sync_flow
from patchflow.cycle import notify, report, rings, runs
from tasks import cycle as t

COMPLETED, SKIPPED, FAILED = runs.STEP_COMPLETED, runs.STEP_SKIPPED, runs.STEP_FAILED
MISSED_TAG = "run-if-missed"  # deployments/service.py tags its catch-up runs with it


class GateDecision(RunInput):
    """The input a manual gate waits for (the Resume form in the Prefect UI)."""

    approve: bool = True
    reason: str = ""
    by: str = ""


def scheduled_run() -> bool:
    """Was this flow run started by its schedule (or as a missed scheduled run)? A Quick run
    of the scheduled deployment carries the same parameters but is neither."""
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    return bool(run and (run.auto_scheduled or MISSED_TAG in (run.tags or [])))


@flow(name="patchflow-cycle", log_prints=False, on_running=[record_process])
def cycle(policy: str, dry_run: bool = False, install: bool = True,
          run_id: int | None = None, trigger: str = "manual",
          started_by: str | None = None) -> dict[str, Any]:
    """Run the patch cycle of `policy`; returns the run as `patchflow cycle show --json`."""
    if trigger == "scheduled" and not scheduled_run():
        trigger = "manual"  # a Quick run never counts as the scheduled one
    if run_id is None:
        run_id = t.create_run(policy, dry_run or not install, trigger, started_by or "prefect")
    started = t.start_cycle(run_id, flow_run.get_id())
    try:
        failed = _steps(run_id, started, dry_run or not install,
                        attended=trigger == "scheduled" and not started["auto_install"])
    except Exception as exc:
        t.finish_cycle(run_id, runs.FAILED, str(exc).splitlines()[0][:500] if str(exc)
                       else type(exc).__name__)
        raise
    return t.finish_cycle(run_id, runs.FAILED if failed else runs.COMPLETED,
                          "; ".join(f if " " in f else f"step {f} failed" for f in failed)
                          if failed else None)


def _steps(run_id: int, started: dict[str, Any], dry_run: bool,
           attended: bool = False) -> list[str]:
    failed: list[str] = []
    # 1. sync: the vulnerability feeds first when older than a day (the scan rates with them)
    sync_stale_feeds()
    due = t.check_sync(started["server"])
    if due["due"]:
        outcome = sync_flow(started["server"])
        ok = outcome["status"] == "Successful"
        t.record_step(run_id, "sync", COMPLETED if ok else FAILED,
                      f"{due['reason']}: synced: {outcome['status']}: {outcome['message']}")
        if not ok:
            failed.append("sync")  # the scan still runs, on the catalog held
    else:
        t.record_step(run_id, "sync", SKIPPED, due["reason"])
    # 2. scan
    scanned = scan_flow({"policy": started["policy"]}, trigger="cycle")
    t.record_step(run_id, "scan", COMPLETED if scanned["status"] == "completed" else FAILED,
                  f"scan {scanned['scan_id']} {scanned['status']}: {scanned['scanned']} "
                  f"endpoint(s) scanned, {scanned['pairs']} missing pair(s), "
                  f"{scanned['failed']} failed", details={"scan_id": scanned["scan_id"]})
    if scanned["status"] != "completed":
        return [*failed, "scan"]
    # 3. approve
    plan = t.plan_approvals(run_id)
    pairs = sum(len(r["endpoints"]) for r in plan["rows"])
    t.record_step(run_id, "approve", COMPLETED,
                  f"{len(plan['rows'])} patch(es) approved for {pairs} install(s) on "
                  f"{plan['endpoints']} endpoint(s)"
                  + "".join(f"; {n}" for n in plan["notes"]),
                  report.PLAN_COLUMNS, report.plan_rows(plan["rows"]))
    # 4. install, ring by ring; 5. verify; 6. report
    results = _install_rings(run_id, started, plan, dry_run, attended)
    failed.extend(r["note"] for r in results if r.get("halted"))
    flagged = _verify(run_id, [r for r in results if r.get("install")])
    for result in results:
        job = (result.get("install") or {}).get("job_id")
        result["flagged"] = [f for f in flagged if f["job_id"] == job] if job else []
    summary = report.run_summary(started["policy"], dry_run, plan["rows"], results)
    sent = "" if dry_run else _regular_reports(run_id, started["policy"], summary["text"],
                                               failed)
    ring_columns = ["ring", "approved_patches", "approved_pairs", "installed", "failed",
                    "pending_reboot", "still_missing", "note"]
    t.record_step(run_id, "report", COMPLETED, summary["text"] + sent, ring_columns,
                  [[r[c] for c in ring_columns] for r in summary["rings"]],
                  details={"rings": summary["rings"]})
    return failed


def _regular_reports(run_id: int, policy: str, summary: str, failed: list[str]) -> str:
    """The regular reports (missing, compliance) after the install and its verification,
    mailed under the run's outcome to `[cycle] email` when set; returns what the report
    step adds to its summary. A report or mail problem is said there, not raised: the
    installs are done and recorded either way."""
    try:
        to = notify.recipients()
        built = report_flow(kinds=["missing", "compliance"], email=to or None,
                            created_by=f"cycle:{policy}"[:128],
                            heading=notify.outcome_heading(policy, run_id, bool(failed)),
                            intro=[summary, *failed])
    except Exception as exc:  # one line in the step, the cycle goes on
        return f"; regular reports not built: {str(exc).splitlines()[0] if str(exc) else exc}"
    said = f"; regular reports in {built['path']}"
    if built["email_error"]:
        return f"{said}; e-mail not sent: {built['email_error']}"
    return f"{said}; mailed to {', '.join(to)}" if to else said


def _install_rings(run_id: int, started: dict[str, Any], plan: dict[str, Any],
                   dry_run: bool, attended: bool = False) -> list[dict[str, Any]]:
    """One install job per ring, in order; from the second ring on, the gate on the ring
    before it decides (its success rate, or an administrator at a manual gate), and a failed
    or rejected gate halts the cycle leaving later rings untouched. `attended`: the first ring
    waits at a manual gate too (a scheduled run of a policy without automatic install)."""
    results: list[dict[str, Any]] = []
    single = len(plan["rings"]) == 1
    previous: dict[str, Any] | None = None
    for index, ring in enumerate(plan["rings"]):
        name = ring["name"]
        step = "install" if single else f"install:{name}"
        if dry_run:
            t.record_step(run_id, step, SKIPPED, "dry run: nothing installed")
            results.append({"ring": name, "install": None, "note": "dry run"})
            continue
        manual = ring.get("gate") == "manual" or (index == 0 and attended)
        passed, reason = True, ""
        if manual and ring["pairs"]:
            why = ("manual gate" if ring.get("gate") == "manual"
                   else "automatic install is off for this policy")
            if previous is not None:
                why += f"; {rings.result(previous['ring'], _counts(previous.get('install')))}"
            passed, reason = _manual_gate(run_id, started["policy"], name, index + 1,
                                          why)
        elif previous is not None and not manual:
            passed, reason = rings.gate(previous["ring"], _counts(previous.get("install")),
                                        ring["min_success_rate"])
            t.record_step(run_id, f"gate:{name}", COMPLETED if passed else FAILED, reason)
        if not passed:
            results.append({"ring": name, "install": None, "halted": True, "note": reason})
            for later in plan["rings"][len(results):]:
                results.append({"ring": later["name"], "install": None,
                                "note": "halted before this ring"})
            return results
        if previous is not None and ring["delay_minutes"]:
            t.ring_delay(name, ring["delay_minutes"])
        if not ring["pairs"]:
            t.record_step(run_id, step, SKIPPED, "nothing approved is missing")
            previous = {"ring": name, "install": None}
            results.append({**previous, "note": "nothing to install"})
            continue
        job_id = t.create_install_job(run_id, name, ring["pairs"], started["auto_restart"])
        installed = install_flow(job_id)
        t.record_step(run_id, step, COMPLETED,
                      f"install job {job_id} {installed['status']}: {installed['summary']}",
                      details={"job_id": job_id})
        previous = {"ring": name, "install": installed}
        results.append({**previous, "note": None})
    return results


def _manual_gate(run_id: int, policy: str, ring: str, position: int,
                 why: str) -> tuple[bool, str]:
    """Pause the flow run until an administrator resumes it; (passed, reason). The pause key
    is the ring's position (Prefect allows lowercase letters, digits and dashes only)."""
    step = f"gate:{ring}"
    hours = t.setting("gate_timeout_hours")
    t.record_step(run_id, step, runs.STEP_WAITING,
                  f"{why}: waiting for an administrator (`patchflow cycle resume {run_id}` "
                  f"[--reject], or Resume in the Prefect UI; at most {hours:g} h)")
    t.notify_gate(run_id, policy, ring, why)  # before Paused: a slow mail server never
    t.set_run_state(run_id, runs.PAUSED)      # stands between "Paused" and Prefect's pause
    try:
        decision = pause_flow_run(wait_for_input=GateDecision,
                                  timeout=max(1, round(hours * 3600)),
                                  poll_interval=int(t.setting("gate_poll_s")),
                                  key=f"gate-{position}")
    except FlowPauseTimeout:
        decision = None
    t.set_run_state(run_id, runs.RUNNING)
    if decision is None:
        reason = f"manual gate before ring {ring}: no decision within {hours:g} h: cycle halted"
        t.record_step(run_id, step, FAILED, reason)
        return False, reason
    who = decision.by.strip()[:128] or "the Prefect UI"
    because = f": {decision.reason.strip()[:500]}" if decision.reason.strip() else ""
    if decision.approve:
        reason = f"manual gate before ring {ring}: resumed by {who}{because}"
        t.record_step(run_id, step, COMPLETED, reason)
        return True, reason
    reason = f"manual gate before ring {ring}: rejected by {who}{because}: cycle halted"
    t.record_step(run_id, step, FAILED, reason)
    return False, reason


def _counts(install: dict[str, Any] | None) -> dict[str, int]:
    if not install:
        return {}
    known = {"succeeded": install.get("succeeded", 0), "failed": install.get("failed", 0),
             "reboot pending": install.get("reboot_pending", 0),
             "cancelled": install.get("cancelled", 0)}
    known["open"] = max(0, int(install.get("items", 0)) - sum(known.values()))
    return known


def _verify(run_id: int, installed: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rescan every endpoint touched (once), then flag what still misses per job."""
    if not installed:
        t.record_step(run_id, "verify", SKIPPED, "nothing installed")
        return []
    hosts: set[str] = set()
    stale: set[str] = set()
    for result in installed:
        waited = t.await_inventories(result["install"]["job_id"])
        hosts.update(waited["hosts"])
        stale.update(waited["stale"])
    if hosts:
        scan_flow({"endpoints": sorted(hosts)}, trigger="cycle")
    flagged: list[dict[str, Any]] = []
    for result in installed:
        job_id = result["install"]["job_id"]
        flagged.extend({**f, "job_id": job_id, "ring": result["ring"]}
                       for f in t.verify(job_id, sorted(stale)))
    t.record_step(
        run_id, "verify", COMPLETED,
        f"{len(hosts)} endpoint(s) rescanned, {len(flagged)} install(s) installed but still "
        "missing" + (f"; no fresh inventory from {', '.join(sorted(stale))}" if stale else ""),
        ["Ring", "Endpoint", "Patch", "State", "Reason"],
        [[f["ring"], f["endpoint"], f["patch"], f["state"], f["reason"]] for f in flagged],
        details={"still_missing": flagged})
    return flagged
