"""The shapes every report shares: column sets, labels, severity order and the Report container.

Builders agree on these names so that one HTML renderer and one CSV formatter serve every report,
and so that a column is called the same in the CSV header, the JSON of `patchflow missing` and the
Prefect artifact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from models.enums import Category, RestartRequired, ScanState, Severity

SEVERITIES: tuple[str, ...] = tuple(s.value for s in Severity)
CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)
RESTARTS: tuple[str, ...] = tuple(r.value for r in RestartRequired)
SCANNED_STATES: frozenset[str] = frozenset({ScanState.MISSING_PATCHES, ScanState.UP_TO_DATE})

# One row per (endpoint, patch). The contract of patchflow.scanning.missing_query.load_missing.
MISSING_COLUMNS: tuple[str, ...] = (
    "endpoint", "endpoint_id", "group", "group_id", "patch_id", "kb", "package_id", "title",
    "product", "severity", "category", "restart_required", "eula_status", "installed_version",
    "available_version", "reason", "release_date", "detected_at",
)
# The rated rows the reports read (patchflow.catalog.vuln_query.load_rated_missing): the pair's
# CVEs, highest CVSS, exploited in the wild, earliest CISA KEV due date.
VULN_COLUMNS: tuple[str, ...] = ("cves", "cvss", "exploited", "kev_due_date")
RATED_MISSING_COLUMNS: tuple[str, ...] = (*MISSING_COLUMNS, *VULN_COLUMNS)
# One row per (endpoint, patch) found installed, by a patchflow job or by an inventory.
INSTALLED_COLUMNS: tuple[str, ...] = (
    "endpoint", "endpoint_id", "group", "group_id", "patch_id", "kb", "package_id", "title",
    "severity", "category", "restart_required", "eula_status", "release_date", "installed_at",
    "source", "job_id", "started_by",
)
# The latest install job item per (endpoint, patch): what the patch view counts as failed.
OUTCOME_COLUMNS: tuple[str, ...] = (
    "endpoint_id", "patch_id", "kb", "package_id", "title", "severity", "category",
    "restart_required", "eula_status", "release_date", "state", "finished_at",
)
ENDPOINT_COLUMNS: tuple[str, ...] = ("endpoint_id", "endpoint", "group_id", "group", "scan_state")
# Patch attributes a report needs to describe a patch in its glossary.
PATCH_COLUMNS: tuple[str, ...] = (
    "patch_id", "kb", "package_id", "title", "severity", "category", "restart_required",
    "release_date",
)

# Identifier columns: in the CSV (joinable), not in the HTML (noise for a reader).
HIDDEN_IN_HTML: frozenset[str] = frozenset({"endpoint_id", "patch_id", "group_id"})

LABELS: dict[str, str] = {
    "endpoint": "Endpoint",
    "group": "Group",
    "kb": "KB",
    "package_id": "Package",
    "title": "Patch",
    "product": "Product",
    "severity": "Severity",
    "category": "Category",
    "restart_required": "Restart",
    "eula_status": "EULA",
    "installed_version": "Installed version",
    "available_version": "Available version",
    "reason": "Reason",
    "release_date": "Released",
    "detected_at": "Detected",
    "installed_at": "Installed",
    "source": "Found by",
    "job_id": "Job",
    "started_by": "Started by",
    "missing": "Missing on",
    "installed": "Installed on",
    "failed": "Failed on",
    "patches": "Patches",
    "pairs": "Missing (endpoint, patch)",
    "endpoints": "Endpoints",
    "endpoints_affected": "Endpoints affected",
    "scanned": "Scanned",
    "not_scanned": "Not scanned",
    "up_to_date": "Up to date",
    "percent_up_to_date": "% up to date",
    "missing_patches": "Missing patches",
    "missing_pairs": "Missing (endpoint, patch)",
    "installs": "Installs measured",
    "mean_days_to_install": "Mean days release → install",
    "median_days_to_install": "Median days release → install",
    "state": "State",
    "finished_at": "Finished",
    "cves": "CVEs",
    "cvss": "CVSS",
    "exploited": "Exploited",
    "kev_due_date": "KEV due date",
    "overdue_kev_pairs": "Overdue KEV pairs",
}

NO_GROUP = "(no group)"


def label(column: str) -> str:
    return LABELS.get(column, column.replace("_", " ").capitalize())


def empty(columns: tuple[str, ...]) -> pd.DataFrame:
    """An empty frame with the contract's columns, so builders never special-case 'no data'."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})


def severity_rank(values: pd.Series) -> pd.Series:
    """Critical first; values outside the vocabulary sort last instead of raising."""
    order = {s: i for i, s in enumerate(SEVERITIES)}
    return values.map(order).fillna(len(SEVERITIES)).astype("int64")


def category_rank(values: pd.Series) -> pd.Series:
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return values.map(order).fillna(len(CATEGORIES)).astype("int64")


def normalize_severity(values: pd.Series) -> pd.Series:
    """Counts must cover all five severities; an unexpected stored value counts as Unspecified."""
    return values.where(values.isin(SEVERITIES), Severity.UNSPECIFIED.value)


@dataclass
class Table:
    """One table of a report; `name` is its CSV file stem and part of its artifact key."""

    name: str
    title: str
    frame: pd.DataFrame
    detail: bool = False  # the per-row table: paged (and split by group) in HTML, whole in CSV
    split_by_group: bool = False


@dataclass
class Report:
    """What a builder returns: headline figures first, then tables, then the patches it names."""

    kind: str
    title: str
    headline: list[tuple[str, str]]
    tables: list[Table]
    patches: pd.DataFrame  # PATCH_COLUMNS + "endpoints": the glossary every patch link targets
    artifact_table: str  # name of the small table published as the Prefect table artifact
    notes: list[str] = field(default_factory=list)
    count_label: str = "Endpoints"  # what the glossary's `endpoints` figure counts

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)

    @property
    def detail_rows(self) -> int:
        return sum(len(t.frame) for t in self.tables if t.detail)


def glossary(frame: pd.DataFrame, count_column: str = "endpoint_id") -> pd.DataFrame:
    """Distinct patches of a per-row frame with the number of endpoints they concern."""
    columns = [c for c in PATCH_COLUMNS if c in frame.columns]
    if frame.empty:
        out = empty((*PATCH_COLUMNS, "endpoints"))
        return out
    first = frame.drop_duplicates("patch_id")[columns].set_index("patch_id")
    if count_column in frame.columns:
        first["endpoints"] = frame.groupby("patch_id")[count_column].nunique()
    else:
        first["endpoints"] = pd.NA
    out = first.reset_index()
    out = out.assign(_rank=severity_rank(out["severity"]))
    return out.sort_values(["_rank", "title"]).drop(columns="_rank").reset_index(drop=True)


def group_labels(groups: pd.Series) -> pd.Series:
    return groups.astype("object").where(groups.notna(), NO_GROUP)
