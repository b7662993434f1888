"""What an endpoint's scan result depends on, so a rescan can skip the endpoints it cannot change.

An endpoint's result is a function of its inventory, the patch server it scans against, the
engine's rules, and the catalog rows of the products it "touches": the MSRC products its OS
and its Microsoft software map to (`ms:<product>`) and the third-party packages its programs
match (`app:<package id>`, ambiguous matches included). The engine returns the touched keys
with every scan (`ScanResult.touched`). This module digests the catalog per key, so that after
a sync the scan store can tell, per endpoint, whether any key it touches changed:

- `rows[key]`: every catalog row of the key. For an MSRC product that is every row of every
  patch with a row for it, whatever its product: the rules look a KB up across products
  (a sibling release quoting the endpoint's build), so a KB revised under another product
  changes this product's digest too.
- `available[server|key]`: the patch ids of the key the server offers (its filters).
- `universe`: what decides which packages a program matches: the third-party identity tables
  (normalised names and codes, publishers, architectures of every package), the engine's
  own source and the caller's salt (patchflow's version). When it changes (a package release
  with a new ProductCode, which most MSI releases bring; a changed rule; a new patchflow
  version), no old result is kept. Which MSRC products an
  endpoint maps to does not depend on the catalog: a product that gains its first rows
  changes its own `rows` digest, so only its endpoints are rescanned.

Everything here is pure and deterministic: digests are SHA-256 over a canonical text form.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from applicability.frames import COLUMNS, coerce
from applicability.thirdparty import AppIndex

MS = "ms:"
APP = "app:"


def _digest(parts: Iterable[Any]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, default=_plain, separators=(",", ":")).encode())
        h.update(b"\n")
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """JSON for the values catalog frames hold (NA, timestamps, numpy scalars, lists)."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and value != value:  # NaN
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return str(value)


def _row(values: tuple[Any, ...]) -> list[Any]:
    return [_plain(v) for v in values]


@cache
def engine_fingerprint() -> str:
    """The applicability package's own source: a new rule is a new universe."""
    here = Path(__file__).parent
    return _digest((p.name, p.read_text(encoding="utf-8"))
                   for p in sorted(here.glob("*.py")))


@dataclass(frozen=True)
class CatalogDigests:
    universe: str
    rows: Mapping[str, str]
    available: Mapping[str, str]

    @property
    def fingerprint(self) -> str:
        return _digest([self.universe, sorted(self.rows.items()),
                        sorted(self.available.items())])

    def to_json(self) -> str:
        return json.dumps({"universe": self.universe, "rows": self.rows,
                           "available": self.available}, sort_keys=True,
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> CatalogDigests:
        data = json.loads(text)
        return cls(data["universe"], data["rows"], data["available"])


def catalog_digests(ms_catalog: pd.DataFrame, app_catalog: pd.DataFrame,
                    server_patches: pd.DataFrame, salt: str = "") -> CatalogDigests:
    """The per-key digests of one catalog (the frames of `applicability.frames`). `salt` goes
    into the universe: the caller's own version, whose change must rescan everyone too."""
    ms_cols = list(ms_catalog.columns)
    by_patch: dict[int, list[list[Any]]] = defaultdict(list)
    products: dict[str, set[int]] = defaultdict(set)
    for row in ms_catalog[ms_cols].itertuples(index=False, name=None):
        record = dict(zip(ms_cols, row, strict=True))
        patch = int(record["patch_id"])
        by_patch[patch].append(_row(row))
        if isinstance(record["product"], str):
            products[MS + record["product"].casefold()].add(patch)
    patch_digest = {p: _digest(sorted(rows, key=json.dumps)) for p, rows in by_patch.items()}
    rows = {key: _digest(sorted(patch_digest[p] for p in patches))
            for key, patches in products.items()}
    members: dict[str, set[int]] = {k: set(v) for k, v in products.items()}

    app_cols = list(app_catalog.columns)
    app_rows: dict[str, list[list[Any]]] = defaultdict(list)
    for row in app_catalog[app_cols].itertuples(index=False, name=None):
        record = dict(zip(app_cols, row, strict=True))
        key = APP + str(record["package_id"])
        app_rows[key].append(_row(row))
        members.setdefault(key, set()).add(int(record["patch_id"]))
    rows.update({k: _digest(sorted(v, key=json.dumps)) for k, v in app_rows.items()})

    offered: dict[int, set[int]] = defaultdict(set)
    for server, patch in server_patches[["server_id", "patch_id"]].itertuples(
            index=False, name=None):
        offered[int(server)].add(int(patch))
    available = {}
    for server, patches in offered.items():
        for key, ids in members.items():
            hit = sorted(ids & patches)
            if hit:
                available[f"{server}|{key}"] = _digest(hit)
    universe = _digest([engine_fingerprint(), salt, _identity(app_catalog)])
    return CatalogDigests(universe, rows, available)


def _identity(app_catalog: pd.DataFrame) -> list[Any]:
    """The third-party lookup tables a program is matched through (`thirdparty.AppIndex`):
    normalised names and codes, publishers and architectures. A new version that brings no new
    name or code (most releases) leaves them, and so the universe, unchanged."""
    if app_catalog.empty:
        return []
    index = AppIndex.build(coerce(app_catalog, COLUMNS["app_catalog"], "app_catalog"))
    def table(entries: Mapping[str, Iterable[Any]]) -> list[Any]:
        return sorted((k, sorted(json.dumps(_plain(v)) for v in values))
                      for k, values in entries.items())

    return [table(index.codes), table(index.names), table(index.arches),
            sorted(index.package_names.items())]


def touched_keys(os_products: pd.DataFrame, ms_products: pd.DataFrame,
                 app_matches: pd.DataFrame) -> pd.DataFrame:
    """endpoint_id, key: the keys each endpoint's result depends on (see the module doc), once
    each, in (endpoint_id, key) order.

    os_products, ms_products: endpoint_id, pkey (casefolded MSRC product; NA ignored);
    app_matches: endpoint_id, package_id. A batch's ~12,000 (endpoint, key) rows name a few
    dozen keys: the text is built and sorted per key, the rows are deduplicated and ordered
    as integers."""
    endpoints, codes, keys = [], [], []
    for frame, column, prefix in ((os_products, "pkey", MS), (ms_products, "pkey", MS),
                                  (app_matches, "package_id", APP)):
        f = frame[frame[column].notna()]
        code, names = pd.factorize(f[column].astype(str))
        endpoints.append(f["endpoint_id"].to_numpy(dtype=np.int64))
        codes.append(code + len(keys))
        keys += [prefix + name for name in names.tolist()]
    ordered = sorted(set(keys))
    position = {key: i for i, key in enumerate(ordered)}
    rank = np.array([position[key] for key in keys], dtype=np.int64)
    n = max(len(ordered), 1)
    pairs = np.unique(np.concatenate(endpoints) * n + rank[np.concatenate(codes)])
    return pd.DataFrame({
        "endpoint_id": pairs // n,
        "key": pd.Series(np.array(ordered, dtype=object)[pairs % n] if ordered else [],
                         dtype="str"),
    })


@dataclass(frozen=True)
class Profile:
    """What one endpoint's last result was computed from, besides the catalog and inventory."""

    server_id: int | None
    keys: tuple[str, ...]

    @property
    def digest(self) -> str:
        return _digest([self.server_id, list(self.keys)])


def profiles(endpoint_ids: Iterable[int], servers: Mapping[int, int | None],
             touched: pd.DataFrame) -> dict[int, Profile]:
    """endpoint id -> Profile, for every endpoint given (an endpoint touching nothing has an
    empty profile: only a new universe, inventory or server can change its result)."""
    keys: dict[int, list[str]] = defaultdict(list)
    for e, k in zip(touched["endpoint_id"].tolist(), touched["key"].tolist(), strict=True):
        keys[int(e)].append(k)
    return {int(e): Profile(servers.get(int(e)), tuple(sorted(set(keys.get(int(e), ())))))
            for e in endpoint_ids}


def changed(then: CatalogDigests, now: CatalogDigests, profile: Profile) -> bool:
    """Whether a result computed from `profile` under catalog `then` may differ under `now`."""
    if then.universe != now.universe:
        return True
    for key in profile.keys:
        if then.rows.get(key) != now.rows.get(key):
            return True
        if profile.server_id is not None:
            avail = f"{profile.server_id}|{key}"
            if then.available.get(avail) != now.available.get(avail):
                return True
    return False
