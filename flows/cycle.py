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
from patchflow.cycle import report, rings, runs
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
                          "; ".join(f if " " in f else f"step {f} failed" for f in failed)
                          if failed else None)


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
    # 4. install, ring by ring; 5. verify; 6. report
    results = _install_rings(run_id, started, plan, dry_run)
    failed.extend(r["note"] for r in results if r.get("halted"))
    flagged = _verify(run_id, [r for r in results if r.get("install")])
    for result in results:
        job = (result.get("install") or {}).get("job_id")
        result["flagged"] = [f for f in flagged if f["job_id"] == job] if job else []
    summary = report.run_summary(started["policy"], dry_run, plan["rows"], results)
    ring_columns = ["ring", "approved_patches", "approved_pairs", "installed", "failed",
                    "pending_reboot", "still_missing", "note"]
    t.record_step(run_id, "report", COMPLETED, summary["text"], ring_columns,
                  [[r[c] for c in ring_columns] for r in summary["rings"]],
                  details={"rings": summary["rings"]})
    return failed


def _install_rings(run_id: int, started: dict[str, Any], plan: dict[str, Any],
                   dry_run: bool) -> list[dict[str, Any]]:
    """One install job per ring, in order; from the second ring on, the gate on the ring
    before it decides, and a failed gate halts the cycle leaving later rings untouched."""
    results: list[dict[str, Any]] = []
    single = len(plan["rings"]) == 1
    previous: dict[str, Any] | None = None
    for ring in plan["rings"]:
        name = ring["name"]
        step = "install" if single else f"install:{name}"
        if dry_run:
            t.record_step(run_id, step, SKIPPED, "dry run: nothing installed")
            results.append({"ring": name, "install": None, "note": "dry run"})
            continue
        if previous is not None:
            passed, reason = rings.gate(previous["ring"], _counts(previous.get("install")),
                                        ring["min_success_rate"])
            t.record_step(run_id, f"gate:{name}", COMPLETED if passed else FAILED, reason)
            if not passed:
                results.append({"ring": name, "install": None, "halted": True,
                                "note": reason})
                for later in plan["rings"][len(results):]:
                    results.append({"ring": later["name"], "install": None,
                                    "note": "halted before this ring"})
                return results
            if ring["delay_minutes"]:
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
