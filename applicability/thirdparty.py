"""Third-party rules: match installed programs to catalog packages, compare versions.

Matching (`AppIndex.match`, shared with the reference loop) goes by exact ProductCode or
UpgradeCode first (GUIDs case-insensitive; non-GUID codes such as "7-Zip" are Uninstall key
names), and only when no code matches, by normalised display name + publisher. Architecture is
kept apart: the program's own arch (registry view) wins, then a token in its name ("(64-bit)"),
then the arch of the matched code when all catalog rows agree; a package without an installer
for that arch does not match. A program matching several packages is ambiguous and reported as
such, whatever the patch server offers (it is about identifying the program), and so is a
matched program without a DisplayVersion. A program whose arch stays unknown is compared with
the newest version over the package's architectures when they all agree (PuTTY 0.81's swapped
codes need no guess then); when they differ it is ambiguous.

A program is missing an update when its version is below the newest available catalog version
for its package and arch. Several entries of one package and arch on an endpoint (an old
Uninstall key left behind, or two installs) are judged on the highest version: that is the copy
in use, and updating replaces it; the lower entries are named in the reason. When two installs
(e.g. x86 and x64) lack the same newest patch, one row is reported with both reasons.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from applicability.frames import AMBIGUOUS_COLUMNS, MISSING_COLUMNS, empty_frame
from applicability.names import (
    clean_name,
    infer_arch,
    normalize_code,
    normalize_name,
    normalize_publisher,
    publishers_agree,
)
from applicability.osmap import normalize_arch
from sources.versions import version_key

if TYPE_CHECKING:
    from applicability.prepared import PreparedCatalog

ALL_ARCHES = ("x86", "x64", "arm64")


def catalog_arch(arch: object) -> str:
    """An installer's arch; one without any (or "neutral") serves every architecture."""
    return normalize_arch(arch) or (
        arch.strip().casefold() if isinstance(arch, str) and arch.strip() else "neutral"
    )


@dataclass(frozen=True)
class Match:
    """How one program relates to the catalog."""

    package_ids: tuple[str, ...] = ()
    arch: str | None = None
    via: str = ""  # "ProductCode", "UpgradeCode" or "name"
    arch_source: str = ""  # "inventory", "name", "code" or ""

    @property
    def ambiguous(self) -> bool:
        return len(self.package_ids) > 1


@dataclass
class AppIndex:
    """Lookup tables built once from the app catalog (all versions, available or not)."""

    codes: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    names: dict[str, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    arches: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    package_names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, app_catalog: pd.DataFrame) -> AppIndex:
        idx = cls()
        cols = [
            "package_id",
            "package_name",
            "publisher",
            "arch",
            "product_codes",
            "upgrade_codes",
            "display_names",
        ]
        for pid, pname, pub, arch, pcs, ucs, dns in app_catalog[cols].itertuples(
            index=False, name=None
        ):
            a = catalog_arch(arch)
            idx.arches[pid].update(ALL_ARCHES if a == "neutral" else (a,))
            idx.package_names.setdefault(pid, pname)
            for code in [*pcs, *ucs]:
                key = normalize_code(code)
                if key:
                    idx.codes[key].add((pid, a))
            pkey = normalize_publisher(pub)
            for n in [pname, *dns]:
                key = normalize_name(n)
                if key:
                    idx.names[key].add((pid, pkey))
        return idx

    def knows(self, name: object, product_code: object, upgrade_code: object) -> bool:
        """Cheap pre-filter: could this program match anything at all?"""
        return (
            normalize_code(product_code) in self.codes
            or normalize_code(upgrade_code) in self.codes
            or normalize_name(name) in self.names
        )

    def match(
        self,
        name: object,
        publisher: object,
        product_code: object,
        upgrade_code: object,
        arch: object,
    ) -> Match:
        """Package(s) and architecture of one installed program (see the module docstring)."""
        arch_source = ""
        prog_arch = normalize_arch(arch)
        if prog_arch in ALL_ARCHES:
            arch_source = "inventory"
        else:
            prog_arch = infer_arch(name)
            arch_source = "name" if prog_arch else ""
        hits: set[tuple[str, str]] = set()
        via = ""
        for kind, code in (("ProductCode", product_code), ("UpgradeCode", upgrade_code)):
            key = normalize_code(code)
            if key and key in self.codes:
                hits |= self.codes[key]
                via = via or kind
        if hits:
            packages = {p for p, _ in hits}
            code_arches = {a for _, a in hits if a != "neutral"}
            if prog_arch is None and len(packages) == 1 and len(code_arches) == 1:
                prog_arch, arch_source = next(iter(code_arches)), "code"
        else:
            pub = normalize_publisher(publisher)
            packages = {
                p
                for p, cpub in self.names.get(normalize_name(name), ())
                if publishers_agree(pub, cpub)
            }
            via = "name" if packages else ""
        if prog_arch is not None:
            packages = {p for p in packages if prog_arch in self.arches[p]}
        return Match(tuple(sorted(packages)), prog_arch, via if packages else "", arch_source)


def version_ranks(versions: pd.Series) -> dict[str, int]:
    """Integer rank per version string; equal versions ("0.81", "0.81.0.0") share a rank."""
    uniq = sorted({v for v in versions.dropna().unique() if isinstance(v, str)}, key=version_key)
    ranks: dict[str, int] = {}
    rank, prev = -1, None
    for v in uniq:
        k = version_key(v)
        if k != prev:
            rank, prev = rank + 1, k
        ranks[v] = rank
    return ranks


def newest_available(
    app_catalog: pd.DataFrame, server_patches: pd.DataFrame, ranks: dict[str, int] | None = None
) -> pd.DataFrame:
    """server_id, package_id, arch, new_rank, new_version, new_patch_id, package_name.

    ranks: `version_ranks` of the catalog's versions and any others (a batch's installed ones);
    the catalog's alone when None. Which row is newest does not depend on the other versions
    (ranks follow version order, equal versions share one), only the new_rank numbers do: see
    `with_ranks` to renumber a result for a batch.
    """
    if ranks is None:
        ranks = version_ranks(app_catalog["version"])
    rows = server_patches.merge(
        app_catalog[["patch_id", "package_id", "package_name", "version", "arch"]], on="patch_id"
    )
    rows["arch"] = rows["arch"].map(catalog_arch)
    neutral = rows[rows["arch"] == "neutral"]
    rows = pd.concat(
        [rows[rows["arch"] != "neutral"], *(neutral.assign(arch=a) for a in ALL_ARCHES)],
        ignore_index=True,
    )
    rows["new_rank"] = rows["version"].map(ranks).astype(float)
    rows = rows.sort_values(["new_rank", "patch_id"])
    top = rows.drop_duplicates(["server_id", "package_id", "arch"], keep="last")
    return top.rename(columns={"version": "new_version", "patch_id": "new_patch_id"})[
        [
            "server_id",
            "package_id",
            "arch",
            "new_rank",
            "new_version",
            "new_patch_id",
            "package_name",
        ]
    ]


def with_ranks(newest: pd.DataFrame, ranks: dict[str, int]) -> pd.DataFrame:
    """A `newest_available` result with new_rank renumbered by ranks (from a superset of its
    versions): the same frame `newest_available` gives with those ranks."""
    return newest.assign(new_rank=newest["new_version"].map(ranks).astype(float))


def _signature_ids(df: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """One integer per distinct combination of the columns, NA-safe and cheap on many rows."""
    key = np.zeros(len(df), dtype=np.int64)
    for col in cols:
        codes, uniq = pd.factorize(df[col], use_na_sentinel=True)
        key = pd.factorize(key * (len(uniq) + 1) + (codes + 1))[0].astype(np.int64)
    return key


def missing_apps(
    programs: pd.DataFrame,
    availability: pd.DataFrame,
    prepared: PreparedCatalog,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(missing rows, ambiguous rows, matches) for the third-party side; matches are the
    (endpoint_id, package_id) pairs some program matched, ambiguous ones included: what the
    endpoint's result depends on (`applicability.basis`).

    The app index, and the matching keys of names, codes and programs already seen in earlier
    batches, come from `prepared` (built once per run).
    """
    app_catalog = prepared.app_catalog
    names = programs["name"].dropna().unique()
    known_names = prepared.known_names(names.tolist())
    codes = pd.concat([programs["product_code"], programs["upgrade_code"]]).dropna().unique()
    known_codes = prepared.known_codes(codes.tolist())
    p = programs[
        programs["name"].isin(known_names)
        | programs["product_code"].isin(known_codes)
        | programs["upgrade_code"].isin(known_codes)
    ].reset_index(drop=True)
    if p.empty:
        return (empty_frame(MISSING_COLUMNS), empty_frame(AMBIGUOUS_COLUMNS),
                pd.DataFrame({"endpoint_id": pd.Series(dtype="int64"),
                              "package_id": pd.Series(dtype=object)}))
    sig_cols = ["name", "publisher", "product_code", "upgrade_code", "arch"]
    p["sig"] = _signature_ids(p, sig_cols)
    sigs = p.drop_duplicates("sig")
    match = prepared.match
    matches = {
        s: match(tuple(row))
        for s, *row in sigs[["sig", *sig_cols]].itertuples(index=False, name=None)
    }
    sig_list = p["sig"].tolist()
    p["package_ids"] = pd.Series([matches[s].package_ids for s in sig_list], index=p.index,
                                 dtype=object)
    p["n_pkg"] = [len(matches[s].package_ids) for s in sig_list]
    matched = pd.DataFrame(
        [(e, pkg) for e, s in zip(p["endpoint_id"].tolist(), sig_list, strict=True)
         for pkg in matches[s].package_ids], columns=["endpoint_id", "package_id"])
    p["march"] = pd.Series([matches[s].arch for s in sig_list], index=p.index)
    p = p.drop(columns="arch")

    amb = p[p["n_pkg"] > 1]
    amb = amb.assign(reason=[f"matches several packages by {matches[s].via}" for s in amb["sig"]])
    p = p[p["n_pkg"] == 1]
    p = p.assign(package_id=pd.Series([t[0] for t in p["package_ids"]], index=p.index, dtype="str"))
    no_version = p["version"].isna() | (p["version"].str.strip() == "")
    amb = pd.concat(
        [amb, p[no_version].assign(reason="installed version unknown (no DisplayVersion)")]
    )
    p = p[~no_version].merge(availability, on="endpoint_id")

    ranks = version_ranks(pd.concat([app_catalog["version"], p["version"]]))
    p["rank"] = p["version"].map(ranks).astype(float)
    newest = with_ranks(prepared.newest, ranks)

    known = p[p["march"].notna()].merge(
        newest,
        left_on=["server_id", "package_id", "march"],
        right_on=["server_id", "package_id", "arch"],
    )
    unknown = p[p["march"].isna()].reset_index(drop=True).reset_index(names="row")
    unknown = unknown.merge(newest, on=["server_id", "package_id"])
    spread = unknown.groupby("row")["new_rank"].transform("nunique")
    amb_arch = unknown[spread > 1].drop_duplicates("row")
    amb_arch = amb_arch.assign(
        package_ids=amb_arch["package_id"].map(lambda x: (x,)),
        reason="architecture unknown and the newest version differs by architecture",
    )
    unknown = unknown[spread == 1].sort_values("new_patch_id").drop_duplicates("row", keep="last")
    unknown = unknown.assign(arch="arch unknown")
    amb = pd.concat([amb, amb_arch], ignore_index=True)

    cols = [
        "endpoint_id",
        "package_id",
        "arch",
        "name",
        "version",
        "rank",
        "new_rank",
        "new_version",
        "new_patch_id",
        "package_name",
    ]
    m = pd.concat([known[cols], unknown[cols]], ignore_index=True)
    m = m.sort_values(["endpoint_id", "package_id", "arch", "rank", "version"])
    gkey = ["endpoint_id", "package_id", "arch"]
    top = m.drop_duplicates(gkey, keep="last")
    extra = m[m.duplicated(gkey, keep="last")]
    # Plain dict joins: a pandas group-by string aggregation costs more than the rest of this
    # step for the few rows that need it.
    lower = _join_by(zip(*_lists(extra, gkey), strict=True), extra["version"])
    top = top.assign(lower=[", ".join(lower.get(k, ())) for k in zip(
        *_lists(top, gkey), strict=True)])
    top = top[top["rank"] < top["new_rank"]]
    reason = (
        top["name"].map({n: clean_name(n) for n in top["name"].unique()})
        + " "
        + top["version"]
        + " ("
        + top["arch"]
        + ") < "
        + top["new_version"]
        + np.where(top["lower"] != "", " (also installed: " + top["lower"] + ")", "")
    )
    out = pd.DataFrame(
        {
            "endpoint_id": top["endpoint_id"].astype("int64"),
            "patch_id": top["new_patch_id"].astype("int64"),
            "product": top["package_name"].astype("str"),
            "installed_version": top["version"].astype("str"),
            "available_version": top["new_version"].astype("str"),
            "reason": reason.astype("str"),
            "rank": top["rank"],
        }
    )
    out = out.sort_values(["endpoint_id", "patch_id", "rank", "reason"])
    key = ["endpoint_id", "patch_id"]
    shared = out[out.duplicated(key, keep=False)]
    joined = _join_by(zip(*_lists(shared, key), strict=True), shared["reason"])
    out = out.drop_duplicates(key).drop(columns="rank")
    if joined:
        out["reason"] = [
            "; ".join(joined[k]) if k in joined else r
            for k, r in zip(zip(*_lists(out, key), strict=True), out["reason"].tolist(),
                            strict=True)
        ]
    amb_out = pd.DataFrame(
        {
            "endpoint_id": amb["endpoint_id"].astype("int64"),
            "program": amb["name"].astype("str"),
            "package_ids": amb["package_ids"].map(", ".join).astype("str"),
            "reason": amb["reason"].astype("str"),
        }
    ).drop_duplicates()
    return out.reset_index(drop=True), amb_out.reset_index(drop=True), matched


def _lists(df: pd.DataFrame, cols: list[str]) -> list[list[Any]]:
    """Columns as Python lists: iterating a pandas string column element by element goes
    through pandas' boxing per value and cost more than the joins it feeds."""
    return [df[c].tolist() for c in cols]


def _join_by(
    keys: Iterable[tuple[Any, ...]], values: pd.Series
) -> dict[tuple[Any, ...], list[str]]:
    """Values grouped by key, in row order."""
    grouped: dict[tuple[Any, ...], list[str]] = {}
    for k, v in zip(keys, values.tolist(), strict=True):
        grouped.setdefault(k, []).append(v)
    return grouped
