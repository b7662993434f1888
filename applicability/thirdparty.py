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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    batches, come from `prepared` (built once per run). A fleet repeats a few hundred
    (program, version, patch server) combinations over its ~5 catalog programs per endpoint, so
    everything that depends on those alone (the match, the version's rank, the newest version
    available, the reason's text) is worked out once per combination, and the rows, one per
    installed program, carry integer codes into them: text per row made this step most of
    the engine's time.
    """
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
    sig, found = _matched_signatures(p, prepared)
    endpoint_ids = p["endpoint_id"].to_numpy(dtype=np.int64)
    per_sig = np.array([len(m.package_ids) for m in found], dtype=np.int64)
    matched = _matched_pairs(endpoint_ids, sig, found, per_sig)
    n_pkg = per_sig[sig]
    vcode, versions = pd.factorize(p["version"])
    versions = versions.tolist()
    unversioned = np.array([not v.strip() for v in versions] + [True], dtype=bool)[vcode]
    several = np.flatnonzero(n_pkg > 1)
    no_version = np.flatnonzero((n_pkg == 1) & unversioned)
    judged = np.flatnonzero((n_pkg == 1) & ~unversioned)
    # Each program's patch server; an endpoint without one has nothing available.
    servers = availability.set_index("endpoint_id")["server_id"]
    at = servers.index.get_indexer(endpoint_ids[judged])
    judged, server_ids = judged[at >= 0], servers.to_numpy(dtype=np.int64)[at[at >= 0]]
    combo = _signature_ids(pd.DataFrame(
        {"sig": sig[judged], "vcode": vcode[judged], "server_id": server_ids}),
        ["sig", "vcode", "server_id"])
    once = np.unique(combo, return_index=True)[1]  # the first row of each combination
    first = judged[once]
    combos = pd.DataFrame({
        "combo": np.arange(len(first)),
        "server_id": server_ids[once],
        "package_id": pd.Series([found[s].package_ids[0] for s in sig[first]], dtype="str"),
        "march": pd.Series([found[s].arch for s in sig[first]], dtype=object),
        "name": p["name"].to_numpy(dtype=object)[first],
        "version": pd.Series([versions[v] for v in vcode[first]], dtype="str"),
    })
    newest, arch_unclear = _newest_per_combo(combos, prepared)
    missing = _missing_rows(endpoint_ids[judged], combo, newest)
    amb = [
        _ambiguous(p, several, [", ".join(found[s].package_ids) for s in sig[several]],
                   [f"matches several packages by {found[s].via}" for s in sig[several]]),
        _ambiguous(p, no_version, [found[s].package_ids[0] for s in sig[no_version]],
                   "installed version unknown (no DisplayVersion)"),
    ]
    unclear = judged[np.isin(combo, arch_unclear)]
    amb.append(_ambiguous(p, unclear, [found[s].package_ids[0] for s in sig[unclear]],
                          "architecture unknown and the newest version differs by architecture"))
    amb_out = pd.concat(amb, ignore_index=True).drop_duplicates()
    return missing, amb_out.reset_index(drop=True), matched


def _matched_signatures(p: pd.DataFrame,
                        prepared: PreparedCatalog) -> tuple[np.ndarray, list[Match]]:
    """Each row's signature (name, publisher, codes, arch: 0..n-1 in order of first
    appearance) and each signature's `Match`, matched once per run (`prepared.match`)."""
    sig_cols = ["name", "publisher", "product_code", "upgrade_code", "arch"]
    sig = _signature_ids(p, sig_cols)
    first = np.unique(sig, return_index=True)[1]
    match = prepared.match
    found = [match(tuple(row)) for row in
             p[sig_cols].take(first).itertuples(index=False, name=None)]
    return sig, found


def _matched_pairs(endpoint_ids: np.ndarray, sig: np.ndarray, found: list[Match],
                   per_sig: np.ndarray) -> pd.DataFrame:
    """endpoint_id, package_id: one row per package each row's program matched, in row order
    (per_sig: how many packages each signature's `Match` names)."""
    count = per_sig[sig]
    flat = np.array([pkg for m in found for pkg in m.package_ids] or [], dtype=object)
    starts = np.cumsum(per_sig) - per_sig
    owner = np.repeat(np.arange(len(sig)), count)
    within = np.arange(len(owner)) - np.repeat(np.cumsum(count) - count, count)
    return pd.DataFrame({
        "endpoint_id": endpoint_ids[owner],
        "package_id": pd.Series(flat[starts[sig][owner] + within], dtype="str"),
    })


def _ambiguous(p: pd.DataFrame, at: np.ndarray, package_ids: list[str],
               reason: list[str] | str) -> pd.DataFrame:
    return pd.DataFrame({
        "endpoint_id": p["endpoint_id"].to_numpy(dtype=np.int64)[at],
        "program": pd.Series(p["name"].to_numpy(dtype=object)[at], dtype="str"),
        "package_ids": pd.Series(package_ids, dtype="str"),
        "reason": pd.Series(reason if isinstance(reason, list) else [reason] * len(at),
                            dtype="str"),
    })


def _newest_per_combo(combos: pd.DataFrame,
                      prepared: PreparedCatalog) -> tuple[pd.DataFrame, np.ndarray]:
    """For each combination its server's newest version of its package for its arch (at most
    one row each: combo, package_id, arch, name, version, rank, new_rank, new_version,
    new_patch_id, package_name), and the combinations of unknown arch whose package's newest
    version differs by arch (ambiguous)."""
    ranks = version_ranks(pd.concat([prepared.app_catalog["version"], combos["version"]]))
    combos = combos.assign(rank=combos["version"].map(ranks).astype(float))
    newest = with_ranks(prepared.newest, ranks)
    known = combos[combos["march"].notna()].merge(
        newest,
        left_on=["server_id", "package_id", "march"],
        right_on=["server_id", "package_id", "arch"],
    )
    unknown = combos[combos["march"].isna()].merge(newest, on=["server_id", "package_id"])
    spread = unknown.groupby("combo")["new_rank"].transform("nunique")
    unclear = unknown.loc[spread > 1, "combo"].unique()
    unknown = (unknown[spread == 1].sort_values("new_patch_id", kind="stable")
               .drop_duplicates("combo", keep="last").assign(arch="arch unknown"))
    cols = ["combo", "package_id", "arch", "name", "version", "rank", "new_rank", "new_version",
            "new_patch_id", "package_name"]
    return pd.concat([known[cols], unknown[cols]], ignore_index=True), unclear


def _missing_rows(endpoint_ids: np.ndarray, combo: np.ndarray,
                  newest: pd.DataFrame) -> pd.DataFrame:
    """The missing rows of programs given by endpoint and combination (`_newest_per_combo`'s
    rows by combo). Each (endpoint, package, arch) is judged on its highest version, the lower
    ones named in the reason; two installs lacking the same patch give one row with both
    reasons, the lower-ranked install's first."""
    slot = np.full(int(combo.max()) + 1 if len(combo) else 0, -1, dtype=np.int64)
    slot[newest["combo"].to_numpy(dtype=np.int64)] = np.arange(len(newest))
    k = slot[combo]
    eps, k = endpoint_ids[k >= 0], k[k >= 0]
    package = pd.factorize(newest["package_id"], sort=True)[0][k]
    arch = pd.factorize(newest["arch"], sort=True)[0][k]
    version = pd.factorize(newest["version"], sort=True)[0][k]
    rank = newest["rank"].to_numpy(dtype=float)
    # Rows in (endpoint, package, arch, rank, version) order; np.lexsort is stable.
    order = np.lexsort((version, rank[k], arch, package, eps))
    eps, k = eps[order], k[order]
    starts = _group_starts(eps, package[order], arch[order])
    last = np.append(starts[1:], True) if len(k) else starts
    versions = newest["version"].tolist()
    base = [f"{clean_name(n)} {v} ({a}) < {nv}" for n, v, a, nv in zip(
        newest["name"].tolist(), versions, newest["arch"].tolist(),
        newest["new_version"].tolist(), strict=True)]
    behind = rank < newest["new_rank"].to_numpy(dtype=float)
    top = np.flatnonzero(last & behind[k])
    reasons = [base[i] for i in k[top].tolist()]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(k)), 0))
    for row, (i, begin) in enumerate(zip(top.tolist(), group_start[top].tolist(), strict=True)):
        if begin < i:  # lower entries of the same package and arch
            lower = ", ".join(versions[j] for j in k[begin:i].tolist())
            reasons[row] += f" (also installed: {lower})"
    eps, k = eps[top], k[top]
    patch = newest["new_patch_id"].to_numpy(dtype=np.int64)[k]
    order = np.lexsort((rank[k], patch, eps))
    eps, k, patch = eps[order], k[order], patch[order]
    reasons = [reasons[i] for i in order.tolist()]
    first = _group_starts(eps, patch)
    if not first.all():  # two installs lacking one patch: joined, by rank then reason
        begins = np.flatnonzero(first).tolist()
        for begin, end in zip(begins, [*begins[1:], len(k)], strict=True):
            if end - begin > 1:
                members = sorted(range(begin, end), key=lambda i: (rank[k[i]], reasons[i]))
                k[begin] = k[members[0]]
                reasons[begin] = "; ".join(reasons[i] for i in members)
        keep = np.flatnonzero(first)
        eps, k, patch = eps[keep], k[keep], patch[keep]
        reasons = [reasons[i] for i in keep.tolist()]
    return pd.DataFrame({
        "endpoint_id": eps,
        "patch_id": patch,
        "product": pd.Series(newest["package_name"].to_numpy(dtype=object)[k], dtype="str"),
        "installed_version": pd.Series(np.asarray(versions, dtype=object)[k], dtype="str"),
        "available_version": pd.Series(newest["new_version"].to_numpy(dtype=object)[k],
                                       dtype="str"),
        "reason": pd.Series(reasons, dtype="str"),
    })


def _group_starts(*keys: np.ndarray) -> np.ndarray:
    """For rows sorted by `keys`: True on the first row of each group of equal keys."""
    starts = np.zeros(len(keys[0]), dtype=bool)
    starts[:1] = True
    for key in keys:
        starts[1:] |= key[1:] != key[:-1]
    return starts
