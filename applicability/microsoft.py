"""Microsoft rules, vectorised: which KB each endpoint is missing, one cumulative at a time.

The rules (the reference loop in `reference.py` spells the same rules out per endpoint):

1. The endpoint's OS maps to one MSRC product (`osmap.msrc_product`); catalog rows for other
   products are ignored, and an unmappable OS is reported in `ScanResult.unmapped`.
2. Candidates are the chain heads among the patches available on the endpoint's patch server: a
   KB that an available KB of the same class supersedes on that product, directly or through the
   chain, is set aside. Chains are kept per class (regular / hotpatch) so that a hotpatch never
   hides the regular update from a machine that cannot take hotpatches. Availability decides
   heads because an unapproved newer KB cannot fix anything: the older approved one still counts.
3. A candidate is satisfied when any of these holds:
   - its FixedBuild is a Windows build of the endpoint's servicing family and build.UBR >= it;
   - the KB itself is installed, or an installed KB supersedes it (transitively, whole catalog);
   - an installed cumulative KB of the same product and family (anything but Security Only) has
     a FixedBuild >= this one: it carries the fix even when the reported UBR lags (reboot
     pending, or UBR unknown as with `systeminfo` inventories);
   - hotpatch endpoints, regular build KB: a hotpatch of the same month or later is satisfied
     (it carries that month's fixes without the reboot). "Same month" is read from builds, not
     dates: a hotpatch covers regular builds up to the first regular build above its own.
   Rows whose FixedBuild is not a Windows build (IE Cumulative "1.001", URLs, None) can only be
   satisfied by the KB rules. Rows quoting another family's build do not apply to the endpoint.
   Rows quoting the sibling release's build (22621 on a 23H2 row: one servicing branch) are
   compared by UBR only when some row of the same KB quotes the endpoint's own build; else
   nothing says the KB was built for this release and the row falls back to the KB rules.
4. Of the unsatisfied build candidates of one class, only the one with the highest FixedBuild is
   reported (ties: Monthly Rollup over Security Only, then by SubType a standalone package (the
   out-of-band "Standalone Security Update" meant for hotpatch-enrolled servers) for hotpatch
   endpoints and the regular security update for the others, then the higher KB number;
   `TIE_RULE`): installing it
   lifts the build above every other one, so listing them would only ask for redundant installs
   (this also covers MSRC chains with gaps, several heads left by missing links, a Security Only
   next to its Monthly Rollup, and servicing-stack or WinRE rows). KB-rule rows are reported
   each (their chains are separate products in effect, e.g. IE Cumulative).
5. Hotpatch endpoints: when both a hotpatch and a regular KB are unsatisfied, the hotpatch is
   reported if the endpoint is on its baseline and the regular KB is no newer than the
   hotpatch's own month; otherwise the regular KB is (Windows itself gives the full update to
   machines off the baseline, and a regular KB is never wrong, it only costs a reboot). "On its
   baseline" means build.UBR (or installed-KB evidence) reaches the hotpatch it supersedes, or
   else the last regular build below it. Hotpatch KBs are never offered to other endpoints.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from applicability.frames import MISSING_COLUMNS, empty_frame
from applicability.osmap import family, msrc_product, normalize_kb_series, parse_fixed_build

if TYPE_CHECKING:
    from applicability.prepared import PreparedCatalog

_COMBO = ["os_name", "display_version", "build", "arch", "installation_type"]
TIE_RULE = (
    "ties at one fixed build: Monthly Rollup over Security Only, then the standalone "
    "(hotpatch-only) package for hotpatch endpoints and the regular security update for the "
    "others, then the higher KB number"
)


def map_endpoints(endpoints: pd.DataFrame) -> pd.DataFrame:
    """endpoint_id, product, pkey, family, unmapped_reason: one MSRC product per endpoint."""
    combos = endpoints[_COMBO].drop_duplicates()
    mapped = [msrc_product(*row) for row in combos.itertuples(index=False, name=None)]
    combos = combos.assign(
        product=pd.Series([p for p, _ in mapped], index=combos.index, dtype="str"),
        unmapped_reason=pd.Series([r for _, r in mapped], index=combos.index, dtype="str"),
    )
    out = endpoints[["endpoint_id", *_COMBO]].merge(combos, on=_COMBO, how="left")
    out["pkey"] = out["product"].str.casefold()
    out["family"] = out["build"].map(family)
    return out[["endpoint_id", "product", "pkey", "family", "unmapped_reason"]]


def prepare_catalog(ms_catalog: pd.DataFrame, pkeys: set[str] | None = None) -> pd.DataFrame:
    """Catalog rows of the given products (all when None) with parsed builds, classes and chain
    gates. Products do not interact: the rows of a product are the same whichever others are
    prepared with it."""
    c = ms_catalog.assign(pkey=ms_catalog["product"].str.casefold())
    c = c[c["pkey"].notna()] if pkeys is None else c[c["pkey"].isin(pkeys)]
    c = c.assign(kb=normalize_kb_series(c["kb"]), sup=normalize_kb_series(c["supersedes_kb"]))
    c = c[c["kb"].notna()]
    parsed = {v: parse_fixed_build(v) for v in c["fixed_build"].dropna().unique()}
    fb = c["fixed_build"].map(parsed)
    c = c.assign(
        fb_build=fb.map(lambda p: float(p[0]) if isinstance(p, tuple) else np.nan),
        fb_ubr=fb.map(lambda p: float(p[1]) if isinstance(p, tuple) else np.nan),
    )
    sub = c["subtype"].fillna("").str.casefold()
    c = c.assign(
        is_build=c["fb_build"].notna(),
        fb_family=c["fb_build"].map(lambda b: float(family(int(b))) if b == b else np.nan),
        hot=sub.str.contains("hotpatch", regex=False),
        sec_only=sub.str.strip() == "security only",
        standalone=sub.str.contains("standalone", regex=False),
        kb_num=c["kb"].str.slice(2).astype(float),
    )
    # The contract is one row per (patch, product); keep the most informative one if not.
    c = c.sort_values(["is_build", "fb_ubr"], ascending=[False, False], na_position="last")
    sup_first = c.groupby(["patch_id", "pkey"], sort=False)["sup"].first()
    c = c.drop_duplicates(["patch_id", "pkey"]).drop(columns="sup")
    c = c.merge(sup_first.rename("sup").reset_index(), on=["patch_id", "pkey"], how="left")
    cols = [
        "patch_id",
        "kb",
        "sup",
        "product",
        "pkey",
        "fixed_build",
        "is_build",
        "fb_build",
        "fb_ubr",
        "fb_family",
        "hot",
        "sec_only",
        "standalone",
        "kb_num",
    ]
    c = c[cols].reset_index(drop=True)
    return pd.concat([c, _hotpatch_gates(c)], axis=1)


def _hotpatch_gates(c: pd.DataFrame) -> pd.DataFrame:
    """gate_ubr and next_reg of each hotpatch row, from FixedBuild order alone.

    Release dates are not used: MSRC adds KBs to old documents when it revises a CVE (the
    October 2025 update of Server 2022 appears in the July 2024 document), while builds grow
    monotonically. The regular update of a hotpatch's own month is the first regular build
    above it (next_reg); its baseline is the hotpatch it supersedes or else the last regular
    build below it (gate_ubr).
    """
    out = pd.DataFrame({"gate_ubr": np.nan, "next_reg": np.nan}, index=c.index)
    hot = c[c["hot"] & c["is_build"]].reset_index()
    if hot.empty:
        return out
    builds = c[c["is_build"]]
    pred = (
        hot.merge(
            builds[builds["hot"]][["pkey", "kb", "fb_family", "fb_ubr"]],
            left_on=["pkey", "sup", "fb_family"],
            right_on=["pkey", "kb", "fb_family"],
            suffixes=("", "_pred"),
        )
        .groupby("index")["fb_ubr_pred"]
        .min()
    )
    reg = hot.merge(
        builds[~builds["hot"]][["pkey", "fb_family", "fb_ubr"]],
        on=["pkey", "fb_family"],
        suffixes=("", "_reg"),
    )
    below = reg[reg["fb_ubr_reg"] < reg["fb_ubr"]].groupby("index")["fb_ubr_reg"].max()
    above = reg[reg["fb_ubr_reg"] > reg["fb_ubr"]].groupby("index")["fb_ubr_reg"].min()
    gate = pd.concat([pred, below], axis=1).min(axis=1)
    out.loc[gate.index, "gate_ubr"] = gate.to_numpy()
    out.loc[above.index, "next_reg"] = above.to_numpy()
    return out


def supersedence_closure(c: pd.DataFrame) -> pd.DataFrame:
    """pkey, anc, desc: desc supersedes anc on that product, directly or transitively.

    Walked in plain Python over a dict of direct successors: a catalog's chains are a few
    thousand edges, and a frontier of pandas merges (one round per link of the longest chain)
    was two thirds of preparing a catalog, which every scan and rescan pays once.
    """
    edges = c[c["sup"].notna() & (c["sup"] != c["kb"])]
    edges = edges[["pkey", "sup", "kb"]].rename(columns={"sup": "anc", "kb": "desc"})
    edges = edges.drop_duplicates()
    successors: dict[tuple[str, str], list[str]] = {}
    for pkey, anc, desc in edges.itertuples(index=False, name=None):
        successors.setdefault((pkey, anc), []).append(desc)
    rows = []
    for (pkey, anc), direct in successors.items():
        seen: dict[str, None] = {}  # insertion-ordered: the same frame on every run
        stack = list(direct)
        while stack:
            desc = stack.pop()
            if desc == anc or desc in seen:
                continue
            seen[desc] = None
            stack.extend(successors.get((pkey, desc), ()))
        rows.extend((pkey, anc, desc) for desc in seen)
    out = pd.DataFrame(rows, columns=["pkey", "anc", "desc"])
    return out.astype(edges.dtypes.to_dict()) if rows else edges.reset_index(drop=True)


def chain_heads(
    c: pd.DataFrame, closure: pd.DataFrame, server_patches: pd.DataFrame
) -> pd.DataFrame:
    """Available catalog rows per server that no available KB of the same class supersedes."""
    sc = server_patches.merge(c, on="patch_id")
    sup = sc[["server_id", "pkey", "kb", "hot"]].rename(columns={"kb": "desc"})
    sup = sup.merge(closure, on=["pkey", "desc"])[["server_id", "pkey", "anc", "hot"]]
    sup = sup.drop_duplicates().rename(columns={"anc": "kb"}).assign(_sup=True)
    sc = sc.merge(sup, on=["server_id", "pkey", "kb", "hot"], how="left")
    return sc[sc["_sup"].isna()].drop(columns="_sup").reset_index(drop=True)


@dataclass(frozen=True)
class CatalogSides:
    """The catalog's sides of `missing_ms`'s merges, cut once per run (`PreparedCatalog`)
    rather than once per batch.

    quoted      kb, build: the Windows builds each KB's rows quote (`_sibling_only`)
    cumulative  pkey, kb, fb_family, fb_ubr: build rows that are not Security Only
    hotpatch    pkey, kb, fb_family, fb_ubr, next_reg: hotpatch build rows
    """

    quoted: pd.MultiIndex
    cumulative: pd.DataFrame
    hotpatch: pd.DataFrame

    @classmethod
    def of(cls, c: pd.DataFrame) -> CatalogSides:
        """c: a `prepare_catalog` result."""
        builds = c[c["is_build"]]
        quoted = builds[["kb", "fb_build"]].drop_duplicates()
        return cls(
            quoted=pd.MultiIndex.from_arrays(
                [quoted["kb"], quoted["fb_build"].astype("int64")], names=["kb", "build"]),
            cumulative=builds[~builds["sec_only"]][["pkey", "kb", "fb_family", "fb_ubr"]],
            hotpatch=builds[builds["hot"]][["pkey", "kb", "fb_family", "fb_ubr", "next_reg"]],
        )


def _sibling_only(cand: pd.DataFrame, quoted: pd.MultiIndex) -> pd.DataFrame:
    """Rows quoting the sibling release's build (22621 on a 23H2 row) are compared by UBR only
    when some row of the same KB quotes the endpoint's own build; otherwise nothing says the
    KB was built for this release, so the row falls back to the KB rule (`sibling`)."""
    is_build = cand["is_build"].to_numpy(dtype=bool)
    sibling = is_build & (cand["fb_build"].to_numpy(dtype=float)
                          != cand["build"].to_numpy(dtype=float))
    if sibling.any():
        at = np.flatnonzero(sibling)
        asked = pd.MultiIndex.from_arrays(
            [cand["kb"].to_numpy(dtype=object)[at], cand["build"].to_numpy(dtype=np.int64)[at]])
        sibling[at[asked.isin(quoted)]] = False
    return cand.assign(is_build=is_build & ~sibling, sibling=sibling)


_KB_MEMO: dict[object, object] = {}  # spelling -> normalised KB (NA); pure, so process-wide
_KB_MEMO_LIMIT = 200_000


def normalize_kbs(s: pd.Series) -> pd.Series:
    """`normalize_kb_series`, computed once per distinct value and remembered across batches
    (a fleet shares its KBs; the regular expression over each batch's distinct KBs was a
    sixth of the engine's time)."""
    codes, uniq = pd.factorize(s)
    values = uniq.tolist()
    memo = _KB_MEMO
    new = [v for v in values if v not in memo]
    if new:
        if len(memo) + len(new) > _KB_MEMO_LIMIT:
            memo.clear()
        norm = normalize_kb_series(pd.Series(new, dtype=s.dtype))
        memo.update(zip(new, norm.tolist(), strict=True))
    normalised = pd.array([memo[v] for v in values], dtype="str")
    return pd.Series(normalised.take(codes, allow_fill=True), index=s.index)


def missing_ms(
    endpoints: pd.DataFrame,
    mapped: pd.DataFrame,
    installed_kbs: pd.DataFrame,
    availability: pd.DataFrame,
    prepared: PreparedCatalog,
) -> pd.DataFrame:
    """endpoint_id, patch_id, product, installed_version, available_version, reason.

    The catalog side (prepared rows, closure, chain heads per server) comes from `prepared`,
    built once per run; the merges below keep only the batch's products and servers.
    """
    ep = endpoints[["endpoint_id", "build", "ubr", "hotpatch"]].merge(
        mapped[mapped["pkey"].notna()][["endpoint_id", "pkey", "family"]], on="endpoint_id"
    )
    ep = ep.merge(availability, on="endpoint_id")
    ep["ubr"] = ep["ubr"].astype("Float64").astype(float)
    closure, heads, sides = prepared.closure, prepared.heads, prepared.ms_sides

    cand = ep.merge(heads, on=["server_id", "pkey"])
    cand = cand[(~cand["hot"] | cand["hotpatch"])]
    cand = cand[~cand["is_build"] | (cand["fb_family"] == cand["family"])]
    cand = _sibling_only(cand, sides.quoted)

    ik = installed_kbs.assign(kb=normalize_kbs(installed_kbs["kb"]))
    ik = ik[ik["kb"].notna()][["endpoint_id", "kb"]].drop_duplicates()
    ikp = ik.merge(ep[["endpoint_id", "pkey", "family", "ubr", "hotpatch"]], on="endpoint_id")
    cand = cand.merge(ik.assign(inst=True), on=["endpoint_id", "kb"], how="left")
    via = (
        ikp[["endpoint_id", "pkey", "kb"]]
        .rename(columns={"kb": "desc"})
        .merge(closure, on=["pkey", "desc"])
    )
    via = via.sort_values("desc").drop_duplicates(["endpoint_id", "anc"])
    via = via.rename(columns={"anc": "kb", "desc": "via_kb"})[["endpoint_id", "kb", "via_kb"]]
    cand = cand.merge(via, on=["endpoint_id", "kb"], how="left")

    cum = ikp.merge(sides.cumulative)
    cum = cum[cum["fb_family"] == cum["family"]].sort_values("fb_ubr")
    cum = cum.drop_duplicates("endpoint_id", keep="last")[["endpoint_id", "fb_ubr", "kb"]]
    cum = cum.rename(columns={"fb_ubr": "inst_ubr", "kb": "inst_kb"})
    cand = cand.merge(cum, on="endpoint_id", how="left")

    hep = ep[ep["hotpatch"]][["endpoint_id", "pkey", "family", "ubr"]]
    hrows = hep.merge(sides.hotpatch)
    hrows = hrows[hrows["fb_family"] == hrows["family"]]
    hrows = hrows.merge(ik.assign(inst=True), on=["endpoint_id", "kb"], how="left")
    hsat = (hrows["ubr"] >= hrows["fb_ubr"]) | hrows["inst"].notna()
    hp_cover = hrows[hsat].assign(cover=lambda d: d["next_reg"].fillna(np.inf))
    hp_cover = hp_cover.groupby("endpoint_id")["cover"].max().rename("hp_cover")
    cand = cand.merge(hp_cover, on="endpoint_id", how="left")

    cand["inst"] = cand["inst"].notna()
    build_ok = cand["is_build"] & (cand["ubr"] >= cand["fb_ubr"])
    cum_ok = cand["is_build"] & (cand["inst_ubr"] >= cand["fb_ubr"])
    hp_ok = cand["is_build"] & ~cand["hot"] & (cand["fb_ubr"] <= cand["hp_cover"])
    sat = build_ok | cand["inst"] | cand["via_kb"].notna() | cum_ok | hp_ok
    u = cand[~sat].copy()
    u["eff_ubr"] = np.fmax(u["ubr"].to_numpy(), u["inst_ubr"].to_numpy())

    kbrule = u[~u["is_build"]].assign(note="")
    b = u[u["is_build"]].assign(
        cum_rank=lambda d: (~d["sec_only"]).astype(int),
        pref=lambda d: (d["standalone"] == d["hotpatch"]).astype(int),
    )
    b = b.sort_values(["endpoint_id", "hot", "fb_ubr", "cum_rank", "pref", "kb_num"])
    top = b.drop_duplicates(["endpoint_id", "hot"], keep="last")
    reg, hot = top[~top["hot"]], top[top["hot"]]
    pair = hot[["endpoint_id", "kb", "gate_ubr", "next_reg", "eff_ubr"]].merge(
        reg[["endpoint_id", "kb", "fb_ubr"]], on="endpoint_id", how="left", suffixes=("", "_r")
    )
    on_base = pair["eff_ubr"] >= pair["gate_ubr"]
    current = pair["fb_ubr"] <= pair["next_reg"].fillna(np.inf)
    take_hot = pair["kb_r"].isna() | (on_base & current)
    hot_eps = set(pair.loc[take_hot, "endpoint_id"])
    hot = hot[hot["endpoint_id"].isin(hot_eps)]
    hot = hot.merge(pair.loc[take_hot, ["endpoint_id", "kb_r"]], on="endpoint_id", how="left")
    hot["note"] = [
        "; hotpatch for this hotpatch endpoint"
        + (f"; regular {k} not needed with it" if isinstance(k, str) else "")
        for k in hot["kb_r"]
    ]
    reg = reg[~reg["endpoint_id"].isin(hot_eps)]
    left = pair.loc[~take_hot, ["endpoint_id", "kb"]].rename(columns={"kb": "kb_h"})
    reg = reg.merge(left, on="endpoint_id", how="left")
    reg["note"] = [
        f"; hotpatch {k} set aside: endpoint not on its baseline or the regular update is newer"
        if isinstance(k, str)
        else ""
        for k in reg["kb_h"]
    ]
    out = pd.concat([d for d in (reg, hot, kbrule) if not d.empty] or [kbrule], ignore_index=True)
    return _format(out) if not out.empty else empty_frame(MISSING_COLUMNS)


def _num(s: pd.Series) -> pd.Series:
    """Whole numbers as text, "" for NA (vectorised: this runs on every missing row)."""
    v = s.to_numpy(dtype=float, na_value=np.nan)
    ok = ~np.isnan(v)
    out = np.full(len(v), "", dtype=object)
    out[ok] = [str(i) for i in v[ok].astype(np.int64).tolist()]
    return pd.Series(out, index=s.index, dtype="str")


def _format(u: pd.DataFrame) -> pd.DataFrame:
    """The one-line reasons and version columns of missing MS rows."""
    build = u["build"].astype(str)
    ubr_known = u["ubr"].notna()
    installed = np.where(ubr_known, build + "." + _num(u["ubr"]), build)
    fb_build = _num(u["fb_build"])
    fixed = fb_build + "." + _num(u["fb_ubr"])
    nb_fixed = u["fixed_build"].fillna("").astype(str)
    head = np.where(
        u["is_build"],
        np.where(
            ubr_known,
            "build " + installed + " < fixed " + fixed,
            "build " + build + " (UBR unknown), fixed " + fixed + ": KB rule",
        ),
        np.where(
            nb_fixed == "",
            "no fixed build: KB rule",
            "fixed build '" + nb_fixed + "' is not a Windows build: KB rule",
        ),
    ).astype(object)
    sib = u["sibling"].to_numpy(dtype=bool)
    if sib.any():  # a few rows at most: spelt out for them alone
        head[sib] = (
            "fixed build " + fixed[sib] + " is for " + fb_build[sib] + ", which shares a "
            "servicing branch with " + build[sib] + ", and no row of " + u["kb"][sib]
            + " quotes build " + build[sib] + ": KB rule"
        ).to_numpy(dtype=object)
    not_inst = np.where(
        u["is_build"] & ubr_known,
        "; " + u["kb"] + " not installed",
        "; " + u["kb"] + " not installed, nor a KB superseding it",
    )
    sup = np.where(u["sup"].notna(), "; supersedes " + u["sup"].fillna(""), "")
    sibling = np.where(
        u["is_build"] & (u["fb_build"] != u["build"]),
        "; " + fb_build + " and " + build + " share a servicing branch: compared by "
        "UBR",
        "",
    )
    reason = pd.Series(head, index=u.index) + sibling + not_inst + sup + u["note"]
    out = pd.DataFrame(
        {
            "endpoint_id": u["endpoint_id"].astype("int64"),
            "patch_id": u["patch_id"].astype("int64"),
            "product": u["product"].astype("str"),
            "installed_version": pd.Series(installed, index=u.index, dtype="str"),
            "available_version": pd.Series(
                np.where(u["is_build"], fixed, None), index=u.index, dtype="str"
            ),
            "reason": reason.astype("str"),
        }
    )
    return out.reset_index(drop=True)
