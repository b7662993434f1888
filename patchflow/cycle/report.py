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
                install: dict[str, Any] | None, flagged: list[dict[str, Any]]) -> dict[str, Any]:
    """The run's own summary figures (per ring; one ring until rings exist)."""
    pairs = sum(len(p["endpoints"]) for p in plan)
    figures: dict[str, Any] = {
        "ring": "all", "approved_patches": len(plan), "approved_pairs": pairs,
        "installed": 0, "failed": 0, "pending_reboot": 0, "still_missing": len(flagged),
    }
    if install:
        figures.update(installed=install.get("succeeded", 0) + install.get("reboot_pending", 0),
                       failed=install.get("failed", 0),
                       pending_reboot=install.get("reboot_pending", 0))
    text = (f"policy {policy}: {len(plan)} patch(es) approved for {pairs} install(s)"
            + ("; dry run, nothing installed" if dry_run else
               f"; {figures['installed']} installed, {figures['failed']} failed, "
               f"{figures['pending_reboot']} pending reboot, {figures['still_missing']} "
               "installed but still missing"))
    return {"text": text, "rings": [figures]}
