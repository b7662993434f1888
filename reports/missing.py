"""Missing patches report: where the fleet stands, worst first, then every (endpoint, patch) row."""

from __future__ import annotations

import pandas as pd

from reports.frames import (
    SEVERITIES,
    Report,
    Table,
    glossary,
    group_labels,
    normalize_severity,
    severity_rank,
)


def by_severity(missing: pd.DataFrame) -> pd.DataFrame:
    """All five severities, zeros included: a row that disappears reads as 'not measured'."""
    sev = normalize_severity(missing["severity"])
    grouped = missing.assign(severity=sev).groupby("severity")
    out = pd.DataFrame(
        {
            "patches": grouped["patch_id"].nunique(),
            "pairs": grouped.size(),
            "endpoints_affected": grouped["endpoint_id"].nunique(),
        }
    ).reindex(list(SEVERITIES), fill_value=0)
    out.index.name = "severity"
    return out.astype("int64").reset_index()


def by_group(missing: pd.DataFrame) -> pd.DataFrame:
    """Pairs per group and severity: which team has the most to do, and how urgent it is."""
    columns = ["group", "endpoints_affected", "patches", "pairs", *SEVERITIES]
    if missing.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    frame = missing.assign(
        group=group_labels(missing["group"]), severity=normalize_severity(missing["severity"])
    )
    grouped = frame.groupby("group", dropna=False)
    out = pd.DataFrame(
        {
            "endpoints_affected": grouped["endpoint_id"].nunique(),
            "patches": grouped["patch_id"].nunique(),
            "pairs": grouped.size(),
        }
    )
    pivot = frame.pivot_table(index="group", columns="severity", values="patch_id",
                              aggfunc="size", fill_value=0)
    pivot = pivot.reindex(columns=list(SEVERITIES), fill_value=0)
    out = out.join(pivot).fillna(0).astype("int64")
    out = out.sort_values(["pairs"], ascending=False, kind="stable").reset_index()
    out.columns.name = None
    return out[columns]


def top_patches(missing: pd.DataFrame, top: int = 10) -> pd.DataFrame:
    """The patches missing on the most endpoints; ties broken by severity, then newest."""
    gloss = glossary(missing)
    if gloss.empty:
        return gloss
    gloss = gloss.assign(_rank=severity_rank(gloss["severity"]))
    gloss = gloss.sort_values(
        ["endpoints", "_rank", "release_date", "patch_id"],
        ascending=[False, True, False, True],
        na_position="last",
        kind="stable",
    )
    return gloss.drop(columns="_rank").head(top).reset_index(drop=True)


def vuln_cells(missing: pd.DataFrame) -> pd.DataFrame:
    """The rated rows' vulnerability columns as report cells: CVEs as one "; "-separated text
    (a list is no CSV cell), CVSS a number, exploited "yes"/"no". Rows without them (an
    unrated frame) pass unchanged."""
    if "cves" not in missing.columns:
        return missing
    return missing.assign(
        cves=[("; ".join(c) if isinstance(c, list | tuple) else (c or "")) for c in
              missing["cves"]],
        cvss=pd.to_numeric(missing["cvss"], errors="coerce").astype("float64"),
        exploited=["yes" if v is True or v == 1 else "no" for v in missing["exploited"]],
    )


def build_missing(missing: pd.DataFrame, top: int = 10) -> Report:
    """The missing report from rated rows (`load_rated_missing`, already filtered and sorted):
    the detail table carries each pair's CVEs, CVSS, exploited and KEV due date."""
    missing = vuln_cells(missing)
    severity = by_severity(missing)
    headline = [
        ("Missing (endpoint, patch) pairs", f"{len(missing):,}"),
        ("Distinct patches", f"{missing['patch_id'].nunique():,}"),
        ("Endpoints affected", f"{missing['endpoint_id'].nunique():,}"),
    ]
    for row in severity.itertuples():
        if row.severity in ("Critical", "Important"):
            headline.append((f"{row.severity} pairs", f"{row.pairs:,}"))
    if "exploited" in missing.columns:
        exploited = missing["exploited"] == "yes"
        headline.append(("Pairs with a CVE exploited in the wild", f"{int(exploited.sum()):,}"))
    return Report(
        kind="missing",
        title="Missing patches",
        headline=headline,
        tables=[
            Table("missing-by-severity", "By severity", severity),
            Table("missing-by-group", "By group", by_group(missing)),
            Table("missing-top-patches", f"Top {top} patches by endpoints missing them",
                  top_patches(missing, top)),
            Table("missing", "Missing patches by endpoint", missing, detail=True,
                  split_by_group=True),
        ],
        patches=glossary(missing),
        artifact_table="missing-by-severity",
        count_label="Missing on (endpoints)",
    )
