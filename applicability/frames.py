"""The frame contract between the database loader and the scan engine.

The engine never touches the database: the scan store (patchflow/scanning/scan_store.py,
`frames_for`) reads one batch of endpoints and the catalog into these frames, and `write_results`
writes back what `scan` returns. Keeping the contract in one
place, with dtypes, lets both sides be tested apart and makes a wrong column fail loudly here
instead of as a silent non-match deep in a merge.

Input frames (one `ScanFrames`; `validate` coerces dtypes and raises ValueError on a missing
column; `build_frames`/`make_frame` build them from dict rows, `empty_frames` gives empty ones):

endpoints       endpoint_id:int64, hostname:str, os_name:str ("Windows 11 Pro",
                "Windows Server 2022 Datacenter"), display_version:str|NA ("23H2"), build:int64
                (22631), ubr:Int64|NA (3737; NA when unknown, e.g. from `systeminfo`), arch:str
                ("x64"|"x86"|"arm64"), hotpatch:bool, installation_type:str|NA ("Client",
                "Server", "Server Core"). One row per endpoint.
installed_kbs   endpoint_id:int64, kb:str ("KB5034123"; other spellings are normalised).
programs        endpoint_id:int64, name:str (Uninstall DisplayName), version:str|NA,
                publisher:str|NA, product_code:str|NA (GUID or Uninstall key name),
                upgrade_code:str|NA, arch:str|NA ("x64"|"x86"|"arm64"; the registry view).
ms_catalog      one row per (patch, product): patch_id:int64, kb:str, product:str (MSRC name),
                fixed_build:str|NA ("10.0.22631.3447", or an app version, a URL...),
                supersedes_kb:str|NA, subtype:str|NA ("Security Update", "Monthly Rollup",
                "Security Only", "Security Hotpatch Update"...), severity:str,
                release_date:datetime64|NaT. One patch per KB across monthly documents.
                release_date is informational: the rules order updates by FixedBuild, because
                MSRC adds KBs to old documents when it revises a CVE.
app_catalog     one row per (patch, installer architecture): patch_id:int64, package_id:str,
                package_name:str, publisher:str, version:str, arch:str ("x64"|"x86"|"arm64"|
                "neutral"; "neutral" or NA serves every arch), product_codes:list[str],
                upgrade_codes:list[str] (installer codes and AppsAndFeaturesEntries codes),
                display_names:list[str] (AppsAndFeaturesEntries DisplayName; may be empty).
                Companion entries an installer also lists (Firefox's "Mozilla Maintenance
                Service") must be left out: `catalog.app_catalog_from_records` shows how.
availability    endpoint_id:int64, server_id:int64: the patch server each endpoint scans against
                (one row per endpoint; an endpoint without a row has no patch available).
server_patches  server_id:int64, patch_id:int64: patches available on that server after its
                filters. Only these count as missing.
ms_facts        endpoint_id:int64, kind:str, name:str|NA, version:str|NA, detail:str|NA: what
                the agent read about Microsoft software beyond the Uninstall key (the .NET
                Framework release, Click-to-Run, SQL Server instances...; kinds in
                `msproducts.FACT_KINDS`). Optional: empty by default.

ms_catalog rows of other products than Windows itself are matched through `msproducts`; a
version-only fix (Edge, "Release Notes") has kb NA.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import pandas as pd

STR = "str"
LIST = "object"

COLUMNS: dict[str, dict[str, str]] = {
    "endpoints": {
        "endpoint_id": "int64",
        "hostname": STR,
        "os_name": STR,
        "display_version": STR,
        "build": "int64",
        "ubr": "Int64",
        "arch": STR,
        "hotpatch": "bool",
        "installation_type": STR,
    },
    "installed_kbs": {"endpoint_id": "int64", "kb": STR},
    "programs": {
        "endpoint_id": "int64",
        "name": STR,
        "version": STR,
        "publisher": STR,
        "product_code": STR,
        "upgrade_code": STR,
        "arch": STR,
    },
    "ms_catalog": {
        "patch_id": "int64",
        "kb": STR,
        "product": STR,
        "fixed_build": STR,
        "supersedes_kb": STR,
        "subtype": STR,
        "severity": STR,
        "release_date": "datetime64[ns]",
    },
    "app_catalog": {
        "patch_id": "int64",
        "package_id": STR,
        "package_name": STR,
        "publisher": STR,
        "version": STR,
        "arch": STR,
        "product_codes": LIST,
        "upgrade_codes": LIST,
        "display_names": LIST,
    },
    "availability": {"endpoint_id": "int64", "server_id": "int64"},
    "server_patches": {"server_id": "int64", "patch_id": "int64"},
    "ms_facts": {
        "endpoint_id": "int64",
        "kind": STR,
        "name": STR,
        "version": STR,
        "detail": STR,
    },
}

MISSING_COLUMNS: dict[str, str] = {
    "endpoint_id": "int64",
    "patch_id": "int64",
    "product": STR,
    "installed_version": STR,
    "available_version": STR,
    "reason": STR,
}
AMBIGUOUS_COLUMNS: dict[str, str] = {
    "endpoint_id": "int64",
    "program": STR,
    "package_ids": STR,
    "reason": STR,
}
UNMAPPED_COLUMNS: dict[str, str] = {"endpoint_id": "int64", "reason": STR}

CATALOG_FRAMES = ("ms_catalog", "app_catalog", "server_patches")  # the same for every batch
BATCH_FRAMES = ("endpoints", "installed_kbs", "programs", "availability", "ms_facts")


@dataclass
class ScanFrames:
    """All inputs of one scan batch; see the module docstring for the columns."""

    endpoints: pd.DataFrame
    installed_kbs: pd.DataFrame
    programs: pd.DataFrame
    ms_catalog: pd.DataFrame
    app_catalog: pd.DataFrame
    availability: pd.DataFrame
    server_patches: pd.DataFrame
    ms_facts: pd.DataFrame = field(default_factory=lambda: make_frame("ms_facts"))


def coerce(df: pd.DataFrame, spec: Mapping[str, str], name: str) -> pd.DataFrame:
    """A copy of df with the spec's columns and dtypes; ValueError on a missing column."""
    missing = [c for c in spec if c not in df.columns]
    if missing:
        raise ValueError(f"{name} frame lacks column(s) {', '.join(missing)}")
    out = df[list(spec)].copy()
    for col, dtype in spec.items():
        if dtype == LIST:
            out[col] = [list(v) if isinstance(v, (list, tuple)) else [] for v in out[col]]
        elif dtype == "datetime64[ns]":
            out[col] = pd.to_datetime(out[col]).astype(dtype)
        elif dtype == "bool":
            out[col] = out[col].fillna(False).astype(bool)
        elif str(out[col].dtype) != dtype:
            try:
                out[col] = out[col].astype(dtype)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{name}.{col} cannot be read as {dtype}: {exc}") from None
    return out.reset_index(drop=True)


def make_frame(name: str, rows: Iterable[Mapping[str, Any]] | pd.DataFrame = ()) -> pd.DataFrame:
    """A frame of the named kind with the contract's columns and dtypes (missing keys are NA)."""
    spec = COLUMNS[name]
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows), columns=list(spec))
    for col in spec:
        if col not in df.columns:
            df = df.assign(**{col: None})
    return coerce(df, spec, name)


def empty_frame(spec: Mapping[str, str]) -> pd.DataFrame:
    """An empty frame with the given columns and dtypes (used for results too)."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in spec.items()})


def empty_frames() -> ScanFrames:
    """A `ScanFrames` with every frame empty; replace the ones a test or loader fills."""
    return ScanFrames(**{k: make_frame(k) for k in COLUMNS})


def build_frames(**frames: pd.DataFrame | Iterable[Mapping[str, Any]]) -> ScanFrames:
    """A `ScanFrames` from rows or frames per name; names not given are empty."""
    unknown = set(frames) - set(COLUMNS)
    if unknown:
        raise ValueError(f"unknown frame name(s): {', '.join(sorted(unknown))}")
    return ScanFrames(**{k: make_frame(k, frames.get(k, ())) for k in COLUMNS})


def validate(frames: ScanFrames, only: Iterable[str] | None = None) -> ScanFrames:
    """The same frames coerced to the contract; a wrong or absent column raises ValueError.

    only: coerce just these frames (e.g. BATCH_FRAMES when the catalog frames were validated
    once for the whole run) and pass the others through as they are.
    """
    names = set(COLUMNS if only is None else only)
    out = {
        f.name: coerce(getattr(frames, f.name), COLUMNS[f.name], f.name)
        if f.name in names
        else getattr(frames, f.name)
        for f in fields(frames)
    }
    if out["endpoints"]["endpoint_id"].duplicated().any():
        raise ValueError("endpoints frame has duplicate endpoint_id values")
    if out["availability"]["endpoint_id"].duplicated().any():
        raise ValueError("availability frame maps an endpoint to more than one patch server")
    return ScanFrames(**out)
