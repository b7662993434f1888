"""Compliance summary: how much of the fleet is up to date, by severity, category and group,
and how long patches take from release to installation.

Definitions (the same in every table, so the figures can be reconciled):
- an endpoint is *scanned* when its scan state is Missing Patches or Up-to-Date (Not Scanned,
  Scanning and Scan Failed are not: their results are absent or stale);
- it is *up to date* (for a severity, category, or overall) when it is scanned and has no
  missing patch of that kind among the selected rows;
- percentages are of all selected endpoints, so an endpoint that was never scanned counts
  against compliance instead of silently dropping out.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

from reports.frames import (
    CATEGORIES,
    SCANNED_STATES,
    SEVERITIES,
    Report,
    Table,
    category_rank,
    group_labels,
    normalize_severity,
)


def _percent(part: pd.Series | int, whole: pd.Series | int) -> pd.Series | float:
    if isinstance(whole, int):
        return round(100.0 * part / whole, 1) if whole else float("nan")
    return (100.0 * part / whole.where(whole > 0)).round(1)


def overview(endpoints: pd.DataFrame, missing: pd.DataFrame) -> pd.DataFrame:
    scanned = endpoints["scan_state"].isin(SCANNED_STATES)
    affected = endpoints["endpoint_id"].isin(missing["endpoint_id"])
    total = len(endpoints)
    up = int((scanned & ~affected).sum())
    return pd.DataFrame(
        [
            {
                "endpoints": total,
                "scanned": int(scanned.sum()),
                "not_scanned": int((~scanned).sum()),
                "missing_patches": int((scanned & affected).sum()),
                "up_to_date": up,
                "percent_up_to_date": _percent(up, total),
                "missing_pairs": len(missing),
            }
        ]
    )


def _by_key(
    endpoints: pd.DataFrame, missing: pd.DataFrame, key: str, values: list[str]
) -> pd.DataFrame:
    """Per value of `key` (severity or category): what is missing and who is clean of it."""
    scanned_ids = endpoints.loc[endpoints["scan_state"].isin(SCANNED_STATES), "endpoint_id"]
    in_scope = missing[missing["endpoint_id"].isin(endpoints["endpoint_id"])]
    grouped = in_scope.groupby(key)
    affected_scanned = (
        in_scope[in_scope["endpoint_id"].isin(scanned_ids)].groupby(key)["endpoint_id"].nunique()
    )
    out = pd.DataFrame(
        {
            "patches": grouped["patch_id"].nunique(),
            "pairs": grouped.size(),
            "endpoints_affected": grouped["endpoint_id"].nunique(),
        }
    ).reindex(values, fill_value=0).fillna(0).astype("int64")
    out["up_to_date"] = len(scanned_ids) - affected_scanned.reindex(values, fill_value=0).astype(
        "int64"
    )
    out["percent_up_to_date"] = _percent(out["up_to_date"], pd.Series(len(endpoints),
                                                                       index=out.index))
    out.index.name = key
    return out.reset_index()


def by_severity(endpoints: pd.DataFrame, missing: pd.DataFrame) -> pd.DataFrame:
    frame = missing.assign(severity=normalize_severity(missing["severity"]))
    return _by_key(endpoints, frame, "severity", list(SEVERITIES))


def by_category(endpoints: pd.DataFrame, missing: pd.DataFrame) -> pd.DataFrame:
    """Categories that have missing patches, in the product's order (unknown ones last)."""
    present = pd.Series(missing["category"].dropna().unique(), dtype="object")
    ordered = present.iloc[category_rank(present).argsort(kind="stable")].tolist()
    known = [c for c in CATEGORIES if c in ordered]
    return _by_key(endpoints, missing, "category", known + [c for c in ordered if c not in known])


def by_group(endpoints: pd.DataFrame, missing: pd.DataFrame) -> pd.DataFrame:
    columns = ["group", "endpoints", "scanned", "not_scanned", "up_to_date",
               "percent_up_to_date", "missing_pairs"]
    if endpoints.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    frame = endpoints.assign(
        group=group_labels(endpoints["group"]),
        scanned=endpoints["scan_state"].isin(SCANNED_STATES),
        affected=endpoints["endpoint_id"].isin(missing["endpoint_id"]),
    )
    frame["up"] = frame["scanned"] & ~frame["affected"]
    pairs = missing.groupby("endpoint_id").size()
    frame["pairs"] = frame["endpoint_id"].map(pairs).fillna(0).astype("int64")
    grouped = frame.groupby("group")
    out = pd.DataFrame(
        {
            "endpoints": grouped.size(),
            "scanned": grouped["scanned"].sum(),
            "up_to_date": grouped["up"].sum(),
            "missing_pairs": grouped["pairs"].sum(),
        }
    ).astype("int64")
    out["not_scanned"] = out["endpoints"] - out["scanned"]
    out["percent_up_to_date"] = _percent(out["up_to_date"], out["endpoints"])
    out = out.sort_values(["percent_up_to_date", "endpoints"], ascending=[True, False],
                          kind="stable")
    return out.reset_index()[columns]


def time_to_install(installed: pd.DataFrame) -> pd.DataFrame:
    """Days from a patch's release to its installation, per severity, over installs with both
    dates known (inventory findings carry the day the endpoint reports, at 00:00 UTC)."""
    frame = installed[installed["release_date"].notna() & installed["installed_at"].notna()]
    released = pd.to_datetime(frame["release_date"]).dt.tz_localize("UTC")
    days = (pd.to_datetime(frame["installed_at"], utc=True) - released).dt.total_seconds() / 86400
    data = pd.DataFrame(
        {"severity": normalize_severity(frame["severity"]), "days": days.astype("float64")}
    )
    grouped = data.groupby("severity")["days"]
    out = pd.DataFrame(
        {
            "installs": grouped.size(),
            "mean_days_to_install": grouped.mean().round(1),
            "median_days_to_install": grouped.median().round(1),
        }
    ).reindex(list(SEVERITIES))
    out["installs"] = out["installs"].fillna(0).astype("int64")
    out.index.name = "severity"
    return out.reset_index()


def overdue_kev(missing: pd.DataFrame, today: dt.date) -> int:
    """Missing pairs with a CVE in CISA's KEV catalog whose due date has passed (the pair's
    kev_due_date is the earliest of its KEV CVEs); 0 for an unrated frame."""
    if "kev_due_date" not in missing.columns or missing.empty:
        return 0
    # ISO dates compare as text; missing values are not due.
    day = today.isoformat()
    return sum(1 for v in missing["kev_due_date"].tolist() if isinstance(v, str) and v[:10] < day)


def build_compliance(
    endpoints: pd.DataFrame, missing: pd.DataFrame, installed: pd.DataFrame,
    today: dt.date | None = None,
) -> Report:
    """Compliance from the selected endpoints, their missing rows and their installs; `today`
    (default: the UTC date) decides which KEV due dates have passed."""
    overdue = overdue_kev(missing, today or dt.datetime.now(dt.UTC).date())
    # Only the columns the figures use: filtering a 400,000-row frame copies every column.
    missing = missing[["endpoint_id", "patch_id", "severity", "category"]]
    installed = installed[["severity", "release_date", "installed_at"]]
    over = overview(endpoints, missing).assign(overdue_kev_pairs=overdue)
    first = {c: over[c].iloc[0] for c in over.columns}  # per column: ints stay ints
    ttl = time_to_install(installed)
    measured = ttl[ttl["installs"] > 0]
    percent = first["percent_up_to_date"]
    headline = [
        ("Endpoints up to date",
         f"{first['up_to_date']:,} of {first['endpoints']:,}"
         + (f" ({percent:.1f}%)" if pd.notna(percent) else "")),
        ("Not scanned (incl. scanning, scan failed)", f"{first['not_scanned']:,}"),
        ("Endpoints missing patches", f"{first['missing_patches']:,}"),
        ("Overdue KEV pairs (CISA due date passed)", f"{overdue:,}"),
    ]
    crit = ttl.set_index("severity").loc["Critical"]
    if crit["installs"]:
        headline.append(("Mean days release → install, Critical",
                         f"{crit['mean_days_to_install']:.1f}"))
    return Report(
        kind="compliance",
        title="Compliance summary",
        headline=headline,
        tables=[
            Table("compliance-overview", "Overview", over),
            Table("compliance-by-severity", "By severity", by_severity(endpoints, missing)),
            Table("compliance-by-category", "By category", by_category(endpoints, missing)),
            Table("compliance-by-group", "By group (least compliant first)",
                  by_group(endpoints, missing)),
            Table("compliance-time-to-install", "Time from release to installation",
                  ttl),
        ],
        patches=pd.DataFrame(columns=["patch_id"]),
        artifact_table="compliance-by-severity",
        notes=[
            "Up to date: scanned (state Missing Patches or Up-to-Date) with none of the selected "
            "missing patches. Percentages are of all selected endpoints; not-scanned endpoints "
            "count as not up to date.",
            "Overdue KEV pairs: missing (endpoint, patch) pairs fixing a CVE in CISA's Known "
            "Exploited Vulnerabilities catalog whose due date has passed.",
            f"Time to install is measured over {int(measured['installs'].sum()):,} installs "
            "whose patch has a release date.",
        ],
    )
