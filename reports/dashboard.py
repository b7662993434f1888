"""Dashboard figures and the geometry of its bar charts, from two tiny GROUP BY frames.

The figures are computed from aggregates, never from the (endpoint, patch) rows, so the
dashboard costs the same on ten endpoints and on fifty thousand. Chart geometry is computed here
rather than in the template so it can be tested and reused by the web console.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pandas as pd

from models.enums import ScanState
from reports.frames import SEVERITIES, normalize_severity

SEVERITY_COLORS: dict[str, str] = {
    "Critical": "#b42318",
    "Important": "#c4320a",
    "Moderate": "#a15c07",
    "Low": "#175cd3",
    "Unspecified": "#475467",
}
OVERVIEW_COLORS: dict[str, str] = {
    "missing_patches": "#b42318",
    "not_scanned": "#667085",
    "up_to_date": "#067647",
}
OVERVIEW_LABELS: dict[str, str] = {
    "missing_patches": ScanState.MISSING_PATCHES.value,
    "not_scanned": ScanState.NOT_SCANNED.value,
    "up_to_date": ScanState.UP_TO_DATE.value,
}


def build_dashboard(
    severity_counts: pd.DataFrame,
    state_counts: pd.DataFrame,
    generated_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The `patchflow dashboard --json` document.

    `severity_counts`: severity, patches, pairs (one row per stored severity value).
    `state_counts`: scan_state, endpoints. Scanning, Scan Failed and any unknown state count as
    not scanned, so the three overview figures always add up to all endpoints.
    """
    sev = severity_counts.assign(severity=normalize_severity(severity_counts["severity"]))
    sums = sev.groupby("severity")[["patches", "pairs"]].sum()
    missing_by_severity = {
        s: {
            "patches": int(sums.loc[s, "patches"]) if s in sums.index else 0,
            "pairs": int(sums.loc[s, "pairs"]) if s in sums.index else 0,
        }
        for s in SEVERITIES
    }
    states = dict(zip(state_counts["scan_state"], state_counts["endpoints"], strict=True))
    total = int(sum(states.values()))
    missing = int(states.get(ScanState.MISSING_PATCHES.value, 0))
    up = int(states.get(ScanState.UP_TO_DATE.value, 0))
    return {
        "generated_at": (generated_at or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
        "endpoints": total,
        "missing_by_severity": missing_by_severity,
        "scan_overview": {
            "missing_patches": missing,
            "not_scanned": total - missing - up,
            "up_to_date": up,
        },
    }


@dataclass(frozen=True)
class Bar:
    label: str
    value: int
    color: str
    y: float
    width: float
    text_x: float


@dataclass(frozen=True)
class BarChart:
    """A horizontal bar chart: labels left, bars, and the count right of each bar."""

    title: str
    bars: list[Bar]
    width: int
    height: int
    label_width: int
    bar_height: int

    @property
    def text_offset(self) -> float:
        return self.bar_height / 2 + 5  # baseline of 14px text, centred on the bar


def bar_chart(
    title: str,
    items: list[tuple[str, int, str]],
    width: int = 520,
    label_width: int = 130,
    bar_height: int = 26,
    gap: int = 12,
    count_width: int = 80,
) -> BarChart:
    """Bars scaled to the largest value; zero stays visible as a zero count, not a missing bar."""
    largest = max((v for _, v, _ in items), default=0)
    room = width - label_width - count_width
    bars = []
    for i, (name, value, color) in enumerate(items):
        length = room * value / largest if largest else 0.0
        if value and length < 2:
            length = 2.0  # a non-zero count must never look like zero
        bars.append(
            Bar(
                label=name,
                value=value,
                color=color,
                y=gap + i * (bar_height + gap),
                width=round(length, 1),
                text_x=round(label_width + length + 8, 1),
            )
        )
    height = gap + len(items) * (bar_height + gap)
    return BarChart(title, bars, width, height, label_width, bar_height)


def charts(dashboard: dict[str, Any]) -> list[BarChart]:
    sev = dashboard["missing_by_severity"]
    over = dashboard["scan_overview"]
    return [
        bar_chart(
            "Missing patches by severity (distinct patches)",
            [(s, sev[s]["patches"], SEVERITY_COLORS[s]) for s in SEVERITIES],
        ),
        bar_chart(
            "Missing (endpoint, patch) pairs by severity",
            [(s, sev[s]["pairs"], SEVERITY_COLORS[s]) for s in SEVERITIES],
        ),
        bar_chart(
            "Patch scan overview (endpoints)",
            [(OVERVIEW_LABELS[k], over[k], OVERVIEW_COLORS[k]) for k in OVERVIEW_LABELS],
        ),
    ]
