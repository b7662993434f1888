"""Patch view: one row per patch with the endpoints missing it, having it, and failing it.

This is the "which update do I push first" view, so the order is severity first, then the
number of endpoints still missing the patch.
"""

from __future__ import annotations

import pandas as pd

from models.enums import ItemState
from reports.frames import PATCH_COLUMNS, Report, Table, empty, severity_rank

PATCH_VIEW_COLUMNS: tuple[str, ...] = (
    *PATCH_COLUMNS, "eula_status", "missing", "installed", "failed",
)


def patch_counts(
    missing: pd.DataFrame, installed: pd.DataFrame, outcomes: pd.DataFrame
) -> pd.DataFrame:
    """Distinct endpoints per patch: missing it, with it installed, whose latest install failed."""
    attrs_cols = [*PATCH_COLUMNS, "eula_status"]
    # One row per patch from each frame first: concatenating 400,000 rows to keep 1,500 is waste.
    parts = [f.drop_duplicates("patch_id")[attrs_cols]
             for f in (missing, installed, outcomes) if not f.empty]
    if not parts:
        return empty(PATCH_VIEW_COLUMNS)
    attrs = pd.concat(parts, ignore_index=True)
    # The missing and outcome frames carry the EULA status; prefer a known one.
    attrs = attrs.sort_values("eula_status", na_position="last", kind="stable")
    attrs = attrs.drop_duplicates("patch_id").set_index("patch_id")
    failed = outcomes[outcomes["state"] == ItemState.FAILED.value]
    for name, frame in (("missing", missing), ("installed", installed), ("failed", failed)):
        counts = frame.groupby("patch_id")["endpoint_id"].nunique() if not frame.empty else None
        attrs[name] = (
            counts.reindex(attrs.index, fill_value=0).astype("int64")
            if counts is not None
            else 0
        )
    out = attrs.reset_index()
    out = out.assign(_rank=severity_rank(out["severity"]))
    out = out.sort_values(
        ["_rank", "missing", "failed", "release_date", "patch_id"],
        ascending=[True, False, False, False, True],
        na_position="last",
        kind="stable",
    )
    return out.drop(columns="_rank").reset_index(drop=True)[list(PATCH_VIEW_COLUMNS)]


def build_patch_view(
    missing: pd.DataFrame, installed: pd.DataFrame, outcomes: pd.DataFrame
) -> Report:
    view = patch_counts(missing, installed, outcomes)
    headline = [
        ("Patches", f"{len(view):,}"),
        ("Patches still missing somewhere", f"{int((view['missing'] > 0).sum()):,}"),
        ("Patches with failed installs", f"{int((view['failed'] > 0).sum()):,}"),
    ]
    gloss = view[list(PATCH_COLUMNS)].assign(endpoints=view["missing"])
    return Report(
        kind="patches",
        title="Patch view",
        headline=headline,
        tables=[Table("patches", "Patches, most urgent first", view, detail=True)],
        patches=gloss,
        artifact_table="patches",
        count_label="Missing on (endpoints)",
        notes=[
            "Missing on: endpoints the last scan found missing the patch. Installed on: endpoints "
            "where a patchflow job installed it or the inventory reports it. Failed on: endpoints "
            "whose latest install attempt of the patch failed.",
        ],
    )
