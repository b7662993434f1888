"""Microsoft rules beyond the OS, vectorised: Office, .NET, Edge, SQL Server, Exchange...

The rules (the reference loop in `reference.py` spells them out per endpoint):

1. Installed entries and agent facts map to MSRC products (`msproducts`); a product the catalog
   has no rows for is ignored, Click-to-Run and entries that cannot be judged become a note in
   `ScanResult.unmapped` (never a silent "Up-to-Date"). Several entries of one product (two
   .NET 8 runtimes) keep the highest version.
2. Candidates are the chain heads among the patches available on the endpoint's patch server,
   as for Windows; rows of an Exchange CU product quoting another CU's build are left out.
3. A candidate is satisfied when its KB is installed or an installed KB supersedes it (the
   installed KBs include the KBs named by Office's own update entries), or, where the reported
   version moves with updates (`compare`), when that version >= FixedBuild; for cumulative
   products also when an installed KB of the product has a FixedBuild >= this one.
4. Cumulative products report only their newest unsatisfied fix (by FixedBuild, by KB number
   for the .NET Framework whose FixedBuild spellings vary); per-component products (Office MSI,
   SharePoint) report every unsatisfied head. A patch listed on two products of one endpoint
   (KB5002661 on Office 2016 and Word 2016) is reported once, for the first product by name.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from applicability.frames import MISSING_COLUMNS, UNMAPPED_COLUMNS, empty_frame
from applicability.microsoft import chain_heads, supersedence_closure
from applicability.msproducts import (
    C2R,
    CUMULATIVE,
    PER_KB,
    UNKNOWN,
    MsProduct,
    could_map,
    kbs_in_name,
    line_of,
    map_fact,
    map_program,
    order_by_kb,
    windows_installable,
)
from applicability.msproducts import (
    is_version as is_version_text,
)
from applicability.osmap import normalize_kb_series
from sources.versions import version_key

if TYPE_CHECKING:
    from applicability.prepared import PreparedCatalog

MAPPED_COLUMNS = [
    "endpoint_id", "product", "pkey", "group", "kind", "version", "compare", "source", "note",
]


def prepare_apps_catalog(ms_catalog: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple]]:
    """Catalog rows of products other than Windows itself, with version order columns, and the
    sorted version keys of their FixedBuilds (installed versions are placed among them).

    fb_rank orders FixedBuilds as versions (-1: not a version).
    """
    c = ms_catalog.assign(pkey=ms_catalog["product"].str.casefold())
    c = c[c["pkey"].notna()]
    names = c["product"].unique()
    own = {p for p in names if windows_installable(p) and not str(p).startswith("Windows ")}
    c = c[c["product"].isin(own)]
    c = c.assign(kb=normalize_kb_series(c["kb"]), sup=normalize_kb_series(c["supersedes_kb"]))
    c = c.sort_values(["patch_id", "pkey"], kind="stable").drop_duplicates(["patch_id", "pkey"])
    fixed = c["fixed_build"].fillna("").astype(str).str.strip()
    is_version = fixed.map(is_version_text).astype(bool)
    keys = sorted({version_key(v) for v in fixed[is_version].unique()})
    rank = {v: bisect.bisect_left(keys, version_key(v)) for v in fixed[is_version].unique()}
    c = c.assign(
        fixed=fixed,
        fb_rank=[float(rank[v]) if ok else -1.0 for v, ok in zip(fixed, is_version, strict=True)],
        line_ok=[line_of(p, f) for p, f in zip(c["product"], fixed, strict=True)],
        by_kb=c["product"].map(order_by_kb).astype(bool),
        kb_num=c["kb"].str.slice(2).astype(float).fillna(-1.0),
        hot=False,
    )
    c = c.assign(order=np.where(c["by_kb"], c["kb_num"], c["fb_rank"]))
    cols = ["patch_id", "kb", "sup", "product", "pkey", "fixed", "fb_rank", "line_ok", "kb_num",
            "order", "hot"]
    return c[cols].reset_index(drop=True), keys


def prepare_apps(
    ms_catalog: pd.DataFrame, server_patches: pd.DataFrame
) -> tuple[pd.DataFrame, list[tuple], pd.DataFrame, pd.DataFrame]:
    """(rows, version keys, closure, heads per server) for the rules of this module."""
    rows, keys = prepare_apps_catalog(ms_catalog)
    keyed = rows[rows["kb"].notna()]
    closure = supersedence_closure(keyed)
    heads = chain_heads(rows, closure, server_patches)
    return rows, keys, closure, heads


def version_position(keys: list[tuple], version: object) -> float:
    """How many catalog FixedBuilds a version reaches: installed >= fixed ⇔ fb_rank < this."""
    if not isinstance(version, str) or not version.strip():
        return np.nan
    return float(bisect.bisect_right(keys, version_key(version)))


def map_inventory(
    programs: pd.DataFrame,
    facts: pd.DataFrame,
    os_products: dict[int, str | None],
    memo: Any = None,
) -> pd.DataFrame:
    """MAPPED_COLUMNS: the MSRC products of each endpoint's programs and facts."""
    rows: list[dict[str, Any]] = []

    def add(eid: int, found: list[MsProduct]) -> None:
        for m in found:
            rows.append({
                "endpoint_id": eid, "product": m.product, "pkey": m.product.casefold(),
                "group": m.group, "kind": m.kind, "version": m.version, "compare": m.compare,
                "source": m.source, "note": m.note,
            })

    cols = ["name", "version", "publisher", "arch"]
    programs = programs[passing_mask(programs["name"], could_map)]
    if not programs.empty:
        keys = list(programs[cols].drop_duplicates().itertuples(index=False, name=None))
        mapped = {k: (memo(k) if memo is not None else map_program(*k)) for k in keys}
        hits = {k: v for k, v in mapped.items() if v}
        if hits:
            sub = programs[programs["name"].isin({k[0] for k in hits})]
            for eid, *k in sub[["endpoint_id", *cols]].itertuples(index=False, name=None):
                found = hits.get(tuple(k))
                if found:
                    add(int(eid), found)
    for r in facts.itertuples(index=False):
        eid = int(r.endpoint_id)
        add(eid, map_fact(r.kind, r.name, r.version, r.detail, os_products.get(eid)))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in MAPPED_COLUMNS}).astype(
            {"endpoint_id": "int64"})
    return pd.DataFrame(rows, columns=MAPPED_COLUMNS)


def passing_mask(names: pd.Series, test: Any) -> np.ndarray:
    """Boolean mask of the rows whose value passes `test`, evaluated once per distinct value (a
    fleet repeats the same few thousand names over hundreds of thousands of rows); a missing
    value never passes."""
    codes, uniq = pd.factorize(names)
    passed = np.fromiter((bool(test(n)) for n in uniq), dtype=bool, count=len(uniq))
    return np.append(passed, False)[codes]  # code -1 (a missing name) reads the last: False


def program_kbs(programs: pd.DataFrame) -> pd.DataFrame:
    """endpoint_id, kb: the KBs Office/SharePoint update entries name (see `kbs_in_name`)."""
    names = programs["name"]
    hit = passing_mask(names, lambda n: could_map(n) and bool(kbs_in_name(n)))
    rows = [
        (int(e), kb)
        for e, n in zip(programs.loc[hit, "endpoint_id"], names[hit], strict=True)
        for kb in kbs_in_name(n)
    ]
    return pd.DataFrame(rows, columns=["endpoint_id", "kb"]).astype({"endpoint_id": "int64"})


def notes(mapped: pd.DataFrame) -> pd.DataFrame:
    """UNMAPPED_COLUMNS rows for products that cannot be judged (Click-to-Run and the like)."""
    n = mapped[mapped["kind"].isin([C2R, UNKNOWN])]
    if n.empty:
        return empty_frame(UNMAPPED_COLUMNS)
    out = n[["endpoint_id", "note"]].rename(columns={"note": "reason"}).drop_duplicates()
    return out.reset_index(drop=True)


def judged(mapped: pd.DataFrame, prepared: PreparedCatalog) -> pd.DataFrame:
    """The mapped products the catalog has rows for, one entry per (endpoint, product): the one
    with the highest compare version (then source), with its version position."""
    j = mapped[mapped["kind"].isin([PER_KB, CUMULATIVE]) & mapped["pkey"].isin(prepared.app_pkeys)]
    if j.empty:
        return j.assign(pos=pd.Series(dtype=float))
    keys = prepared.apps_versions
    vals = [v for v in j["compare"].drop_duplicates() if isinstance(v, str)]
    pos = {v: version_position(keys, v) for v in vals}
    ranked = sorted(version_key(v) for v in vals)
    rank = {v: float(bisect.bisect_left(ranked, version_key(v))) for v in vals}
    j = j.assign(pos=j["compare"].map(pos).astype(float),
                 _k=j["compare"].map(rank).astype(float).fillna(-1.0))
    j = j.sort_values(["endpoint_id", "pkey", "_k", "source"], kind="stable")
    j = j.drop_duplicates(["endpoint_id", "pkey"], keep="last").drop(columns="_k")
    return j.reset_index(drop=True)


def missing_apps_ms(
    mapped: pd.DataFrame,
    installed_kbs: pd.DataFrame,
    availability: pd.DataFrame,
    prepared: PreparedCatalog,
) -> pd.DataFrame:
    """MISSING_COLUMNS rows for the Microsoft products beyond the OS (see the module rules)."""
    j = judged(mapped, prepared)
    if j.empty:
        return empty_frame(MISSING_COLUMNS)
    c, closure, heads = prepared.apps_ms, prepared.apps_closure, prepared.apps_heads
    # The catalog's spelling of the product is reported (MSRC writes "version 21H2" too).
    cand = j.merge(availability, on="endpoint_id").merge(heads, on=["server_id", "pkey"],
                                                         suffixes=("_m", ""))
    cand = cand[cand["line_ok"]]
    if cand.empty:
        return empty_frame(MISSING_COLUMNS)
    ik = installed_kbs[["endpoint_id", "kb"]].drop_duplicates()
    cand = cand.merge(ik.assign(inst=True), on=["endpoint_id", "kb"], how="left")
    ikp = ik.merge(j[["endpoint_id", "pkey"]], on="endpoint_id")
    via = ikp.rename(columns={"kb": "desc"}).merge(closure, on=["pkey", "desc"])
    via = via.sort_values("desc").drop_duplicates(["endpoint_id", "pkey", "anc"])
    via = via.rename(columns={"anc": "kb", "desc": "via_kb"})[
        ["endpoint_id", "pkey", "kb", "via_kb"]]
    cand = cand.merge(via, on=["endpoint_id", "pkey", "kb"], how="left")
    cum = ikp.merge(c[["pkey", "kb", "order"]], on=["pkey", "kb"])
    cum = cum.sort_values("order").drop_duplicates(["endpoint_id", "pkey"], keep="last")
    cum = cum.rename(columns={"order": "inst_order", "kb": "inst_kb"})[
        ["endpoint_id", "pkey", "inst_order", "inst_kb"]]
    cand = cand.merge(cum, on=["endpoint_id", "pkey"], how="left")

    cumulative = cand["kind"] == CUMULATIVE
    version_ok = (cand["fb_rank"] >= 0) & (cand["fb_rank"] < cand["pos"])
    cum_ok = cumulative & (cand["order"] >= 0) & (cand["inst_order"] >= cand["order"])
    sat = cand["inst"].notna() | cand["via_kb"].notna() | version_ok | cum_ok
    u = cand[~sat]
    top = u[u["kind"] == CUMULATIVE].sort_values(["endpoint_id", "group", "order", "kb_num",
                                                  "patch_id"])
    top = top.drop_duplicates(["endpoint_id", "group"], keep="last")
    out = pd.concat([top, u[u["kind"] == PER_KB]], ignore_index=True)
    if out.empty:
        return empty_frame(MISSING_COLUMNS)
    out = out.sort_values(["endpoint_id", "patch_id", "product"])
    out = out.drop_duplicates(["endpoint_id", "patch_id"]).reset_index(drop=True)
    return format_rows(out)


def reason_for(
    kind: str,
    product: str,
    version: object,
    compare: object,
    kb: object,
    fixed: str,
    comparable: bool,
    sup: object,
) -> str:
    """The one-line reason of a missing row (shared with the reference loop)."""
    has_kb = isinstance(kb, str) and bool(kb)
    shown = version if isinstance(version, str) and version else "version unknown"
    if comparable and isinstance(compare, str):
        head = f"{product}: {shown} < fixed {fixed}"
        head += f"; {kb} not installed" if has_kb else "; version-only fix (no KB)"
    elif kind == PER_KB:
        head = (
            f"{product}: per-component update {kb} not installed, nor a KB superseding it "
            f"(not cumulative; installed {shown} does not move with updates)"
        )
    elif has_kb:
        head = (
            f"{product} {shown}: {kb} not installed, nor a KB superseding it or a newer "
            "update of this product"
        )
    else:
        head = f"{product} {shown}: version-only fix {fixed} (no KB); installed version unknown"
    if isinstance(sup, str) and sup:
        head += f"; supersedes {sup}"
    return head


def format_rows(u: pd.DataFrame) -> pd.DataFrame:
    comparable = (u["fb_rank"] >= 0) & u["compare"].notna()
    reasons = [
        reason_for(k, p, v, cmp, kb, f, bool(ok), s)
        for k, p, v, cmp, kb, f, ok, s in zip(
            u["kind"], u["product"], u["version"], u["compare"], u["kb"], u["fixed"],
            comparable, u["sup"], strict=True)
    ]
    return pd.DataFrame({
        "endpoint_id": u["endpoint_id"].astype("int64"),
        "patch_id": u["patch_id"].astype("int64"),
        "product": u["product"].astype("str"),
        "installed_version": u["version"].astype("str"),
        "available_version": u["fixed"].replace("", None).astype("str"),
        "reason": pd.Series(reasons, index=u.index, dtype="str"),
    }).reset_index(drop=True)
