"""The `patchflow-cycle` flow: one governed run per policy, from sync to report.

    sync (if stale) → scan → approve → install → verify → report

Each step is a sub-flow (sync, scan, install: the same flows that run alone) or a task over
the whole policy, and each ends with a markdown and a table artifact, so the Prefect UI shows
the run as one parent with its children and explains every step. The report step runs after
the install and the verification rescan it reports on, by construction. One cycle per policy
runs at a time (patchflow.cycle.runs). A run from the Prefect UI (Quick run) is a manual run;
`install=False` makes it plan without installing, like `--dry-run`.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from deployments.orphans import record_process
from flows.install import install as install_flow
from flows.scan import scan as scan_flow
from flows.sync import sync as sync_flow
from patchflow.cycle import report, runs
from tasks import cycle as t

COMPLETED, SKIPPED, FAILED = runs.STEP_COMPLETED, runs.STEP_SKIPPED, runs.STEP_FAILED


@flow(name="patchflow-cycle", log_prints=False, on_running=[record_process])
def cycle(policy: str, dry_run: bool = False, install: bool = True,
          run_id: int | None = None, trigger: str = "manual",
          started_by: str | None = None) -> dict[str, Any]:
    """Run the patch cycle of `policy`; returns the run as `patchflow cycle show --json`."""
    if run_id is None:
        run_id = t.create_run(policy, dry_run or not install, trigger, started_by or "prefect")
    started = t.start_cycle(run_id, flow_run.get_id())
    try:
        failed = _steps(run_id, started, dry_run or not install)
    except Exception as exc:
        t.finish_cycle(run_id, runs.FAILED, str(exc).splitlines()[0][:500] if str(exc)
                       else type(exc).__name__)
        raise
    return t.finish_cycle(run_id, runs.FAILED if failed else runs.COMPLETED,
                          f"failed step(s): {', '.join(failed)}" if failed else None)


def _steps(run_id: int, started: dict[str, Any], dry_run: bool) -> list[str]:
    failed: list[str] = []
    # 1. sync
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
    # 4. install
    installed: dict[str, Any] | None = None
    if dry_run:
        t.record_step(run_id, "install", SKIPPED, "dry run: nothing installed")
    elif not plan["pairs"]:
        t.record_step(run_id, "install", SKIPPED, "nothing approved is missing")
    else:
        job_id = t.create_install_job(run_id, plan["pairs"], started["auto_restart"])
        installed = install_flow(job_id)
        t.record_step(run_id, "install", COMPLETED,
                      f"install job {job_id} {installed['status']}: {installed['summary']}",
                      details={"job_id": job_id})
    # 5. verify
    flagged: list[dict[str, Any]] = []
    if installed is None:
        t.record_step(run_id, "verify", SKIPPED, "nothing installed")
    else:
        waited = t.await_inventories(installed["job_id"])
        if waited["hosts"]:
            scan_flow({"endpoints": waited["hosts"]}, trigger="cycle")
        flagged = t.verify(installed["job_id"], waited["stale"])
        t.record_step(
            run_id, "verify", COMPLETED,
            f"{len(waited['hosts'])} endpoint(s) rescanned, {len(flagged)} install(s) "
            "installed but still missing"
            + (f"; no fresh inventory from {', '.join(waited['stale'])}"
               if waited["stale"] else ""),
            ["Endpoint", "Patch", "State", "Reason"],
            [[f["endpoint"], f["patch"], f["state"], f["reason"]] for f in flagged],
            details={"still_missing": flagged})
    # 6. report
    summary = report.run_summary(started["policy"], dry_run, plan["rows"], installed, flagged)
    ring_columns = ["ring", "approved_patches", "approved_pairs", "installed", "failed",
                    "pending_reboot", "still_missing"]
    t.record_step(run_id, "report", COMPLETED, summary["text"], ring_columns,
                  [[r[c] for c in ring_columns] for r in summary["rings"]],
                  details={"rings": summary["rings"]})
    return failed
