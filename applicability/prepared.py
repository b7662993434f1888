"""The catalog side of a scan, prepared once per run and shared by every batch.

A scan run evaluates one catalog against many batches of endpoints. Everything that depends on
the catalog alone is done here once instead of per batch: the catalog frames coerced to the
contract, the Microsoft rows with parsed builds and hotpatch gates (`microsoft.prepare_catalog`,
over every product), the supersedence closure, the chain heads per patch server, the products the
catalog knows, the third-party lookup index and the newest version per server, package and arch
(`thirdparty.newest_available`). What each program name or code matches, which repeats across
the batches of a fleet, is memoised here too (bounded), and its matching key once per process
(`NAME_KEYS`, `CODE_KEYS`), so each distinct name is normalised once rather than once per batch
or per run.

    prepared = PreparedCatalog.build(ms_catalog, app_catalog, server_patches)
    for frames in batches:                  # frames built with those same catalog frames
        result = scan(frames, prepared=prepared)

The catalog frames must not be changed in place after preparing them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Any

import pandas as pd

from applicability.frames import CATALOG_FRAMES, COLUMNS, ScanFrames, coerce
from applicability.microsoft import (
    CatalogSides,
    chain_heads,
    prepare_catalog,
    supersedence_closure,
)
from applicability.msapps import prepare_apps
from applicability.msproducts import could_map, map_program
from applicability.names import normalize_code, normalize_name
from applicability.thirdparty import AppIndex, Match, newest_available

MEMO_LIMIT = 200_000  # entries per memo; a full memo is emptied and refilled, never grows beyond
_MISS = object()


class Memo:
    """A bounded memo of a pure one-argument function (emptied when it reaches `limit`)."""

    def __init__(self, fn: Callable[..., Any], limit: int = MEMO_LIMIT) -> None:
        self.fn = fn
        self.limit = limit
        self.values: dict[Hashable, Any] = {}

    def __call__(self, key: Hashable) -> Any:
        try:
            return self.values[key]
        except KeyError:
            pass
        value = self.fn(key)
        if len(self.values) >= self.limit:
            self.values.clear()
        self.values[key] = value
        return value

    def many(self, keys: list[Hashable]) -> list[Any]:
        """`self(k)` for each key, in order (the loop inlined: this runs per distinct name)."""
        values, fn, miss = self.values, self.fn, _MISS
        out = []
        for k in keys:
            v = values.get(k, miss)
            if v is miss:
                v = fn(k)
                if len(values) >= self.limit:
                    values.clear()
                values[k] = v
            out.append(v)
        return out

    def __len__(self) -> int:
        return len(self.values)

    def clear(self) -> None:
        self.values.clear()


# A matching key depends on the text alone, not on the catalog: one memo per process, shared by
# every prepared catalog, so the first scan after a sync (a new catalog) does not normalise the
# fleet's distinct names again (~12 µs each, ~0.1 s for 10,000 names: half the fixed cost of a
# small incremental rescan).
NAME_KEYS = Memo(normalize_name)
CODE_KEYS = Memo(normalize_code)


class PreparedCatalog:
    """Catalog-only work of the engine, done once (see the module docstring).

    ms_catalog, app_catalog, server_patches  the catalog frames coerced to the contract
    ms        `microsoft.prepare_catalog` over every product of the catalog
    ms_sides  the parts of `ms` that `microsoft.missing_ms` merges batches with
    closure   `microsoft.supersedence_closure` of `ms`
    heads     `microsoft.chain_heads` over every patch server
    products  casefolded MSRC product names the catalog has rows for
    apps_ms, apps_versions, apps_closure, apps_heads, app_pkeys
              the same for Microsoft products beyond the OS (`msapps.prepare_apps`,
              version-only rows included)
    apps      the third-party `AppIndex`
    newest    `thirdparty.newest_available` per server, package and arch (a batch renumbers
              its new_rank with `thirdparty.with_ranks`)
    """

    def __init__(
        self,
        ms_catalog: pd.DataFrame,
        app_catalog: pd.DataFrame,
        server_patches: pd.DataFrame,
        *,
        sources: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None = None,
    ) -> None:
        self.ms_catalog = ms_catalog
        self.app_catalog = app_catalog
        self.server_patches = server_patches
        # The frames it was built from: batches carrying these very objects need no comparison.
        self._sources = sources or (ms_catalog, app_catalog, server_patches)
        self.ms = prepare_catalog(ms_catalog)
        self.ms_sides = CatalogSides.of(self.ms)
        self.closure = supersedence_closure(self.ms)
        self.heads = chain_heads(self.ms, self.closure, server_patches)
        self.products = frozenset(ms_catalog["product"].dropna().str.casefold())
        self.apps_ms, self.apps_versions, self.apps_closure, self.apps_heads = prepare_apps(
            ms_catalog, server_patches)
        self.app_pkeys = frozenset(self.apps_ms["pkey"])
        self.apps = AppIndex.build(app_catalog)
        self.newest = newest_available(app_catalog, server_patches)
        self._start_caches()

    @classmethod
    def build(
        cls, ms_catalog: pd.DataFrame, app_catalog: pd.DataFrame, server_patches: pd.DataFrame
    ) -> PreparedCatalog:
        """Coerce the catalog frames to the contract (ValueError if one is wrong) and prepare."""
        raw = (ms_catalog, app_catalog, server_patches)
        frames = [
            coerce(df, COLUMNS[name], name) for df, name in zip(raw, CATALOG_FRAMES, strict=True)
        ]
        return cls(*frames, sources=raw)

    def _match(self, program: tuple[Any, ...]) -> Match:
        """`AppIndex.match` of (name, publisher, product_code, upgrade_code, arch)."""
        return self.apps.match(*program)

    @staticmethod
    def _ms_program(program: tuple[Any, ...]) -> Any:
        """`msproducts.map_program` of (name, version, publisher, arch)."""
        return map_program(*program)

    def _name_used(self, name: object) -> bool:
        """Whether any rule can use a program of this name: a Microsoft mapping or an Office
        update entry (both start with `could_map`) or a name the app index knows."""
        return could_map(name) or (isinstance(name, str)
                                   and self.name_key(name) in self.apps.names)

    def _code_used(self, code: object) -> bool:
        """Whether the app index knows this ProductCode/UpgradeCode."""
        return isinstance(code, str) and self.code_key(code) in self.apps.codes

    def check(self, frames: ScanFrames) -> None:
        """ValueError unless the frames carry the catalog this was prepared from."""
        for name, source, mine in zip(
            CATALOG_FRAMES,
            self._sources,
            (self.ms_catalog, self.app_catalog, self.server_patches),
            strict=True,
        ):
            given = getattr(frames, name)
            if given is source or given is mine:
                continue
            if not coerce(given, COLUMNS[name], name).equals(mine):
                raise ValueError(
                    f"the frames' {name} differs from the one the prepared catalog was built from"
                )

    def known_names(self, names: Iterable[str]) -> set[str]:
        """The names whose matching key the app index knows (memoised across batches)."""
        names = list(names)
        known = self.apps.names
        return {n for n, k in zip(names, self.name_key.many(names), strict=True) if k in known}

    def known_codes(self, codes: Iterable[str]) -> set[str]:
        """The codes whose matching key the app index knows (memoised across batches)."""
        codes = list(codes)
        known = self.apps.codes
        return {c for c, k in zip(codes, self.code_key.many(codes), strict=True) if k in known}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for memo in ("name_key", "code_key", "match", "ms_program", "name_used", "code_used"):
            state[memo] = None  # caches: the other side's shared ones, or rebuilt empty
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._start_caches()

    def _start_caches(self) -> None:
        """The process-wide matching keys, and this catalog's memos, empty."""
        self.name_key = NAME_KEYS
        self.code_key = CODE_KEYS
        self.match = Memo(self._match)
        self.ms_program = Memo(self._ms_program)
        self.name_used = Memo(self._name_used)
        self.code_used = Memo(self._code_used)
        # Most programs have no ProductCode or UpgradeCode: judged here rather than found
        # missing from the memo on most rows of a run's first batch.
        self.code_used(None)
