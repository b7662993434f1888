"""Entry points of the applicability engine: `scan` a batch, `explain` one (endpoint, patch).

`scan` is vectorised over the whole batch (merges and group-bys, no per-endpoint loop) so a
task can hand it thousands of endpoints at once; the catalog-only work is done once per run by
`prepare` (a `PreparedCatalog`) and shared by every batch. `explain` replays the same rules for
a single endpoint through the reference loop, which records why each candidate was kept or set
aside.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from itertools import repeat
from typing import Any

import numpy as np
import pandas as pd

from applicability.basis import touched_keys
from applicability.frames import (
    AMBIGUOUS_COLUMNS,
    BATCH_FRAMES,
    MISSING_COLUMNS,
    UNMAPPED_COLUMNS,
    ScanFrames,
    empty_frame,
    validate,
)
from applicability.microsoft import map_endpoints, missing_ms, normalize_kbs
from applicability.msapps import (
    map_inventory,
    missing_apps_ms,
    notes,
    program_kbs,
)
from applicability.osmap import msrc_product
from applicability.prepared import Memo, PreparedCatalog
from applicability.reference import Reference, Trace
from applicability.thirdparty import missing_apps


@dataclass
class ScanResult:
    """What a scan found.

    missing    endpoint_id, patch_id, product, installed_version, available_version, reason;
               one row per (endpoint, patch): Windows (`microsoft`), Office, .NET, Edge, SQL
               Server... (`msapps`) and third-party applications (`thirdparty`).
    ambiguous  endpoint_id, program, package_ids (comma-separated), reason: installed programs
               that could not be tied to one package/arch or have no version; never guessed.
    touched    endpoint_id, key: the catalog keys each endpoint's result depends on
               (`applicability.basis`), so a rescan can skip what a sync did not change.
    unmapped   endpoint_id, reason: endpoints whose OS has no MSRC product name, or one the
               catalog has no row for, so no Microsoft patch could be evaluated for them (they
               are not "up to date", they are unknown); and Microsoft products beyond the OS
               that cannot be judged (Click-to-Run Office, a SQL Server without its servicing
               line...), one row each (`msapps`). Sorted by endpoint_id, reason.
    """

    missing: pd.DataFrame
    ambiguous: pd.DataFrame
    unmapped: pd.DataFrame
    touched: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(
        {"endpoint_id": pd.Series(dtype="int64"), "key": pd.Series(dtype=object)}))


def _typed(df: pd.DataFrame, spec: dict[str, str], order: list[str]) -> pd.DataFrame:
    if df.empty:
        return empty_frame(spec)
    return df[list(spec)].astype(spec).sort_values(order).reset_index(drop=True)


def prepare(
    ms_catalog: pd.DataFrame, app_catalog: pd.DataFrame, server_patches: pd.DataFrame
) -> PreparedCatalog:
    """The catalog-only work of `scan`, done once for every batch of a run (see `scan`)."""
    return PreparedCatalog.build(ms_catalog, app_catalog, server_patches)


def scan(frames: ScanFrames, prepared: PreparedCatalog | None = None) -> ScanResult:
    """Missing patches, ambiguous programs and unmapped endpoints for one batch.

    prepared: `prepare(ms_catalog, app_catalog, server_patches)` of the very catalog frames the
    batch's `frames` carry, shared by the batches of a run so the catalog-only work is done once;
    built from `frames` when not given. A different catalog raises ValueError.
    """
    if prepared is None:
        prepared = prepare(frames.ms_catalog, frames.app_catalog, frames.server_patches)
    else:
        prepared.check(frames)
    f = validate(frames, only=BATCH_FRAMES)
    f = replace(f, programs=used_programs(f.programs, prepared))
    mapped = map_endpoints(f.endpoints)
    ms = missing_ms(f.endpoints, mapped, f.installed_kbs, f.availability, prepared)
    inventory = ms_inventory(f, mapped, prepared)
    kbs = installed_kbs_with_programs(f)
    msp = missing_apps_ms(inventory, kbs, f.availability, prepared)
    apps, amb, matches = missing_apps(f.programs, f.availability, prepared)
    missing = pd.concat([d for d in (ms, msp, apps) if not d.empty] or [ms], ignore_index=True)
    no_rows = mapped["product"].notna() & ~mapped["pkey"].isin(prepared.products)
    mapped.loc[no_rows, "unmapped_reason"] = "no catalog rows for " + mapped.loc[no_rows, "product"]
    unmapped = mapped[mapped["product"].isna() | no_rows]
    unmapped = unmapped.rename(columns={"unmapped_reason": "reason"})
    unmapped = pd.concat([d for d in (unmapped, notes(inventory)) if not d.empty] or [unmapped])
    return ScanResult(
        missing=_typed(missing, MISSING_COLUMNS, ["endpoint_id", "patch_id"]),
        ambiguous=_typed(amb, AMBIGUOUS_COLUMNS, list(AMBIGUOUS_COLUMNS)),
        unmapped=_typed(unmapped, UNMAPPED_COLUMNS, ["endpoint_id", "reason"]),
        touched=touched_keys(mapped, inventory, matches),
    )


def used_programs(programs: pd.DataFrame, prepared: PreparedCatalog) -> pd.DataFrame:
    """The programs some rule can use, in their order: a name `msproducts.could_map` lets
    through (Microsoft products, Office update entries) or the app index knows, or a
    ProductCode/UpgradeCode it knows. Every rule below starts by keeping only such rows, so
    the result is the same; dropping the rest first (145 of a typical endpoint's 150
    programs) spares each of them its own pass over the whole batch. Each distinct name or
    code is judged once per run (memoised in `prepared`)."""
    if programs.empty:
        return programs
    keep = used_mask(programs["name"], programs["product_code"], programs["upgrade_code"],
                     prepared)
    if keep.all():
        return programs
    return programs[keep].reset_index(drop=True)


def used_mask(names: Sequence[Any], product_codes: Sequence[Any], upgrade_codes: Sequence[Any],
              prepared: PreparedCatalog) -> np.ndarray:
    """`used_programs`' test over plain columns (lists or Series of the same length): the
    scan's reader applies it before building the programs frame (scan_store.read_programs),
    which is most of the cost of reading them."""
    keep = _passing(names, prepared.name_used)
    for codes in (product_codes, upgrade_codes):
        keep |= _passing(codes, prepared.code_used)
    return keep


_UNJUDGED = 2  # `_passing`'s mark for a value its memo has no verdict on yet


def _passing(values: Sequence[Any], test: Memo) -> np.ndarray:
    """Whether each value passes `test`, each distinct value judged once per run (the memo).
    Plain dict look-ups over the column, in C, straight into a numpy array: names (~10,000
    distinct in 300,000 rows) and codes (mostly missing) cost half what factorising them did,
    and a quarter less than collecting the look-ups in a list first. Values not judged yet
    (most of them in a run's first batch) are judged once each, and the column looked up again
    in them, in C too: gathering them row by row in Python cost more than that second pass."""
    if isinstance(values, pd.Series):
        values = values.astype(object).where(values.notna(), None).tolist()
    elif not isinstance(values, list):
        values = list(values)
    found = np.fromiter(map(test.values.get, values, repeat(_UNJUDGED)), dtype=np.int8,
                        count=len(values))
    new = np.flatnonzero(found == _UNJUDGED).tolist()
    if new:
        judged = {value: bool(test(value)) for value in set(map(values.__getitem__, new))}
        found = np.fromiter(map(judged.get, values, found.tolist()), dtype=np.int8,
                            count=len(values))
    return found.astype(bool)


def ms_inventory(f: ScanFrames, mapped: pd.DataFrame, prepared: PreparedCatalog) -> pd.DataFrame:
    """The Microsoft products beyond the OS each endpoint of the batch was mapped to."""
    os_products = {
        int(e): (p if isinstance(p, str) else None)
        for e, p in zip(mapped["endpoint_id"], mapped["product"], strict=True)
    }
    return map_inventory(f.programs, f.ms_facts, os_products, prepared.ms_program)


def installed_kbs_with_programs(f: ScanFrames) -> pd.DataFrame:
    """endpoint_id, kb: installed KBs, normalised, plus those named by Office update entries."""
    ik = f.installed_kbs.assign(kb=normalize_kbs(f.installed_kbs["kb"]))
    ik = pd.concat([ik[["endpoint_id", "kb"]], program_kbs(f.programs)], ignore_index=True)
    return ik[ik["kb"].notna()].drop_duplicates().reset_index(drop=True)


def _only(frames: ScanFrames, endpoint_id: int) -> ScanFrames:
    """The frames cut down to one endpoint (catalog and server patches kept whole)."""

    def cut(df: pd.DataFrame) -> pd.DataFrame:
        return df[df["endpoint_id"] == endpoint_id]

    return ScanFrames(
        endpoints=cut(frames.endpoints),
        installed_kbs=cut(frames.installed_kbs),
        programs=cut(frames.programs),
        ms_catalog=frames.ms_catalog,
        app_catalog=frames.app_catalog,
        availability=cut(frames.availability),
        server_patches=frames.server_patches,
        ms_facts=cut(frames.ms_facts),
    )


def _set_aside(ref: Reference, trace: Trace, patch_id: int) -> list[str]:
    """For a MISSING verdict: the other candidates and why they were set aside."""
    cat = ref.f.ms_catalog
    out = []
    for pid, said in sorted((k, v) for k, v in trace.items() if isinstance(k, int)):
        if pid == patch_id:
            continue
        for line in said:
            if line.startswith("not reported") or "superseded by available" in line:
                label = _label(cat[cat["patch_id"] == pid])
                out.append(f"set aside: {label}: {line}" if not line.startswith(label) else
                           f"set aside: {line}")
    return out


def _label(rows: pd.DataFrame) -> str:
    kb = rows["kb"].iloc[0]
    if isinstance(kb, str):
        return kb
    return f"{rows['product'].iloc[0]} {rows['fixed_build'].iloc[0]}"


def explain(frames: ScanFrames, endpoint_id: int, patch_id: int) -> list[str]:
    """The reasoning for one (endpoint, patch) pair, one line per step, ending with a verdict."""
    ref = Reference(_only(frames, endpoint_id))
    eps = ref.f.endpoints
    if eps.empty:
        return [f"endpoint {endpoint_id} is not in this scan"]
    ep = next(eps.itertuples(index=False))
    product, why = msrc_product(
        ep.os_name, ep.display_version, ep.build, ep.arch, ep.installation_type
    )
    ubr = "?" if pd.isna(ep.ubr) else str(ep.ubr)
    server = ref.server_of.get(endpoint_id)
    lines = [
        f"endpoint {endpoint_id} ({ep.hostname}): {ep.os_name}, build {ep.build}.{ubr}, "
        f"{ep.arch}, hotpatch {'yes' if ep.hotpatch else 'no'}",
        f"MSRC product: {product}" if product else f"no MSRC product: {why}",
        f"patch server: {server}" if server is not None else "no patch server: nothing available",
    ]
    kb_rows = ref.f.ms_catalog[ref.f.ms_catalog["patch_id"] == patch_id]
    app_rows = ref.f.app_catalog[ref.f.app_catalog["patch_id"] == patch_id]
    if kb_rows.empty and app_rows.empty:
        return [*lines, f"patch {patch_id} is not in the catalog"]
    if server is not None and patch_id not in ref.server_patches[int(server)]:
        lines.append(f"patch {patch_id} is not available on patch server {server}")
    trace: Trace = defaultdict(list)
    if not kb_rows.empty and set(kb_rows["product"].str.casefold()) & set(ref.app_ms):
        entries = ref.ms_entries(ep)
        shown = sorted({f"{m.product} ({m.kind}, from {m.source})" for m in entries})
        lines.append("Microsoft products: " + ("; ".join(shown) if shown else "none"))
        found, _ = ref.ms_apps(ep, trace)
        lines += trace.get(patch_id, []) or [
            f"patch {patch_id} ({_label(kb_rows)}) has no row for a Microsoft product of this "
            "endpoint: not applicable"
        ]
    elif not kb_rows.empty:
        kb = kb_rows["kb"].iloc[0]
        if product is None or product.casefold() not in set(kb_rows["product"].str.casefold()):
            lines.append(f"{kb} has no row for this endpoint's product: not applicable")
        found = ref.ms(ep, trace)
        lines += trace.get(patch_id, [])
    else:
        pkg, version = app_rows["package_id"].iloc[0], app_rows["version"].iloc[0]
        lines.append(f"patch {patch_id} is {pkg} {version}")
        found, _ = ref.apps_for(endpoint_id, trace)
        lines += trace.get(pkg, []) or [f"no installed program matches {pkg}"]
        lines += trace.get(patch_id, [])
    if any(r["patch_id"] == patch_id for r in found):
        if not kb_rows.empty and lines[-1].startswith("MISSING:"):
            lines[-1:-1] = _set_aside(ref, trace, patch_id)  # the verdict stays last
        return lines
    if not kb_rows.empty:
        others = [r["reason"] for r in found]
        if others:
            lines.append("reported for this product instead: " + " | ".join(others))
    return [*lines, "verdict: not missing"]
