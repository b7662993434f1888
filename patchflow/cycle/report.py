"""Markdown and tables for the cycle's artifacts and summary: pure functions over the step
results, so what the Prefect UI shows is testable without Prefect."""

from __future__ import annotations

from typing import Any

from patchflow.untrusted import strip_controls


def _cell(value: Any) -> str:
    """A markdown table cell: text from agents and upstreams cannot break the table."""
    text = strip_controls("" if value is None else str(value))
    return text.replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")


def markdown(title: str, summary: str, columns: list[str],
             rows: list[list[Any]], limit: int = 200) -> str:
    lines = [f"# {_cell(title)}", "", _cell(summary), ""]
    if rows:
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows[:limit]]
        if len(rows) > limit:
            lines += ["", f"… and {len(rows) - limit} more (`patchflow cycle show RUN --json`)"]
    return "\n".join(lines) + "\n"


def plan_rows(plan: list[dict[str, Any]]) -> list[list[Any]]:
    return [[p["ring"], p["patch"], len(p["endpoints"]), ", ".join(p["endpoints"][:10]),
             p["why"]] for p in plan]


PLAN_COLUMNS = ["Ring", "Patch", "Endpoints", "Hosts", "Why approved"]


def run_summary(policy: str, dry_run: bool, plan: list[dict[str, Any]],
                rings: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's own summary, per ring. `rings`: [{"ring", "install": the install flow's
    summary or None, "flagged": items installed but still missing, "note": why not run}]."""
    out: list[dict[str, Any]] = []
    for ring in rings:
        rows = [p for p in plan if p["ring"] == ring["ring"]]
        install = ring.get("install") or {}
        out.append({
            "ring": ring["ring"], "approved_patches": len(rows),
            "approved_pairs": sum(len(p["endpoints"]) for p in rows),
            "installed": install.get("succeeded", 0) + install.get("reboot_pending", 0),
            "failed": install.get("failed", 0), "pending_reboot": install.get("reboot_pending", 0),
            "still_missing": len(ring.get("flagged") or []), "note": ring.get("note"),
        })
    total = {k: sum(r[k] for r in out) for k in ("approved_pairs", "installed", "failed",
                                                  "pending_reboot", "still_missing")}
    text = (f"policy {policy}: {len({p['patch'] for p in plan})} patch(es) approved for "
            f"{total['approved_pairs']} install(s)"
            + ("; dry run, nothing installed" if dry_run else
               f"; {total['installed']} installed, {total['failed']} failed, "
               f"{total['pending_reboot']} pending reboot, {total['still_missing']} "
               "installed but still missing"))
    halted = [r for r in out if r["note"] and "halted" in r["note"]]
    if halted:
        text += f"; halted before ring {halted[0]['ring']}"
    return {"text": text, "rings": out}
