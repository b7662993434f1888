"""Installed patches report: what patchflow installed, and what scans found installed lately."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from reports.frames import SEVERITIES, Report, Table, glossary, normalize_severity

SOURCE_JOB = "patchflow"
SOURCE_SCAN = "scan"


def in_window(installed: pd.DataFrame, scan_since: dt.datetime | None) -> pd.DataFrame:
    """Every patchflow install, but only scan findings since `scan_since` (the last report).

    Installs patchflow ran are the audit trail and stay; inventory findings are news only until
    the next report has shown them.
    """
    if scan_since is None or installed.empty:
        return installed
    since = pd.Timestamp(scan_since).tz_convert("UTC") if pd.Timestamp(scan_since).tzinfo else (
        pd.Timestamp(scan_since).tz_localize("UTC")
    )
    # Inventories report a day, not an instant: a KB installed on the day of the last report
    # may postdate it, so the whole day counts.
    day = since.normalize()
    keep = (installed["source"] == SOURCE_JOB) | (installed["installed_at"] >= day)
    return installed[keep].reset_index(drop=True)


def by_severity(installed: pd.DataFrame) -> pd.DataFrame:
    sev = normalize_severity(installed["severity"])
    frame = installed.assign(severity=sev)
    grouped = frame.groupby("severity")
    by_source = frame.groupby(["severity", "source"]).size().unstack(fill_value=0)
    out = pd.DataFrame(
        {
            "installed_by_patchflow": by_source.get(SOURCE_JOB, pd.Series(dtype="int64")),
            "found_by_scan": by_source.get(SOURCE_SCAN, pd.Series(dtype="int64")),
            "patches": grouped["patch_id"].nunique(),
            "endpoints": grouped["endpoint_id"].nunique(),
        }
    ).reindex(list(SEVERITIES)).fillna(0).astype("int64")
    out.index.name = "severity"
    return out.reset_index()


def build_installed(installed: pd.DataFrame, scan_since: dt.datetime | None = None) -> Report:
    """The installed report from `load_installed` rows; `scan_since` trims the scan findings."""
    rows = in_window(installed, scan_since)
    jobs = int((rows["source"] == SOURCE_JOB).sum())
    scans = int((rows["source"] == SOURCE_SCAN).sum())
    since_text = f"since {scan_since:%Y-%m-%d %H:%M} UTC" if scan_since else "(all dates)"
    headline = [
        ("Installed by patchflow", f"{jobs:,}"),
        (f"Found installed by scans {since_text}", f"{scans:,}"),
        ("Endpoints", f"{rows['endpoint_id'].nunique():,}"),
        ("Distinct patches", f"{rows['patch_id'].nunique():,}"),
    ]
    notes = [
        "Installed by patchflow: install job items that succeeded (the latest per endpoint and "
        "patch), with the administrator who started the job.",
        "Found by scan: patches the endpoints' inventories report installed (KB number, or the "
        f"application's MSI ProductCode) {since_text} that no patchflow job installed. The "
        "scan findings start at the last installed report unless --since is given.",
    ]
    return Report(
        kind="installed",
        title="Installed patches",
        headline=headline,
        tables=[
            Table("installed-by-severity", "By severity", by_severity(rows)),
            Table("installed", "Installed patches by endpoint", rows, detail=True,
                  split_by_group=True),
        ],
        patches=glossary(rows),
        artifact_table="installed-by-severity",
        notes=notes,
        count_label="Installed on (endpoints)",
    )
