"""The scan rules as a plain per-endpoint loop: the benchmark baseline and the test oracle.

`scan_reference` must give exactly what `engine.scan` gives; the rules are documented in
`microsoft.py` and `thirdparty.py`. It shares only the leaf helpers (OS → product, FixedBuild
parsing, name normalisation, program matching, version keys) with the vectorised code, so a test
comparing the two checks the merges, group-bys and tie-breaks. With `trace` it also records, per
patch, why each candidate was kept or set aside, which `engine.explain` shows.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from applicability.frames import (
    AMBIGUOUS_COLUMNS,
    MISSING_COLUMNS,
    UNMAPPED_COLUMNS,
    ScanFrames,
    empty_frame,
    validate,
)
from applicability.microsoft import TIE_RULE
from applicability.msapps import reason_for
from applicability.msproducts import (
    C2R,
    CUMULATIVE,
    PER_KB,
    UNKNOWN,
    MsProduct,
    is_version,
    kbs_in_name,
    line_of,
    map_fact,
    map_program,
    order_by_kb,
    windows_installable,
)
from applicability.names import clean_name
from applicability.osmap import family, msrc_product, normalize_kb, parse_fixed_build
from applicability.thirdparty import ALL_ARCHES, AppIndex, catalog_arch
from sources.versions import version_key

Trace = dict[int | str, list[str]]  # patch id or package id -> reasoning lines


def _na(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA or v is pd.NaT


@dataclass
class MsRow:
    patch_id: int
    kb: str
    sup: str | None
    product: str
    fixed_build: str | None
    build: tuple[int, int] | None
    hot: bool
    sec_only: bool
    standalone: bool = False
    sibling: bool = False  # a sibling release's build, not relied on: KB rule (see microsoft)

    @property
    def fam(self) -> int | None:
        return family(self.build[0]) if self.build else None

    @property
    def ubr(self) -> int:
        """FixedBuild UBR (-1 for KB-rule rows, which are never compared by build)."""
        return self.build[1] if self.build else -1

    @property
    def kb_num(self) -> int:
        return int(self.kb[2:])

    def fixed(self) -> str:
        return f"{self.build[0]}.{self.build[1]}" if self.build else str(self.fixed_build)


@dataclass
class AppMsRow:
    """A catalog row of a Microsoft product beyond the OS (kb None: version-only fix)."""

    patch_id: int
    kb: str | None
    sup: str | None
    product: str
    fixed: str
    version: bool  # FixedBuild is a dotted version
    line_ok: bool
    by_kb: bool

    @property
    def kb_num(self) -> int:
        return int(self.kb[2:]) if self.kb else -1


class Reference:
    """Catalog lookups prepared once; `endpoint` then evaluates one endpoint at a time."""

    def __init__(self, frames: ScanFrames) -> None:
        f = validate(frames)
        self.f = f
        self.rows: dict[str, dict[str, MsRow]] = defaultdict(dict)  # pkey -> kb -> row
        found: dict[tuple[int, str], list[tuple[tuple, MsRow, str | None]]] = defaultdict(list)
        for r in f.ms_catalog.itertuples(index=False):
            kb = normalize_kb(r.kb)
            if kb is None or _na(r.product):
                continue
            build = parse_fixed_build(r.fixed_build)
            sub = "" if _na(r.subtype) else str(r.subtype).casefold()
            row = MsRow(
                int(r.patch_id),
                kb,
                None,
                r.product,
                None if _na(r.fixed_build) else r.fixed_build,
                build,
                "hotpatch" in sub,
                sub.strip() == "security only",
                "standalone" in sub,
            )
            rank = (build is not None, build[1] if build else -1)
            found[(row.patch_id, r.product.casefold())].append(
                (rank, row, normalize_kb(r.supersedes_kb))
            )
        # One row per (patch, product): the one with a Windows build and the highest UBR, and
        # the first supersedence given in that order (the vectorised side does the same).
        for (_, pkey), options in found.items():
            options.sort(key=lambda o: o[0], reverse=True)
            row = options[0][1]
            row.sup = next((s for _, _, s in options if s), None)
            self.rows[pkey][row.kb] = row
        self.children: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for pkey, rows in self.rows.items():
            for row in rows.values():
                if row.sup and row.sup != row.kb:
                    self.children[pkey][row.sup].add(row.kb)
        self._desc: dict[tuple[str, str, bool], set[str]] = {}
        self.server_of = dict(
            zip(f.availability["endpoint_id"], f.availability["server_id"], strict=True)
        )
        self.server_patches: dict[int, set[int]] = defaultdict(set)
        for s, p in zip(f.server_patches["server_id"], f.server_patches["patch_id"], strict=True):
            self.server_patches[int(s)].add(int(p))
        self.apps = AppIndex.build(f.app_catalog)
        self.app_rows = list(
            f.app_catalog[["patch_id", "package_id", "package_name", "version", "arch"]].itertuples(
                index=False, name=None
            )
        )
        self.kbs: dict[int, set[str]] = defaultdict(set)
        for e, kb in zip(f.installed_kbs["endpoint_id"], f.installed_kbs["kb"], strict=True):
            n = normalize_kb(kb)
            if n:
                self.kbs[int(e)].add(n)
        self.app_ms: dict[str, dict[int, AppMsRow]] = defaultdict(dict)  # pkey -> patch -> row
        for r in f.ms_catalog.itertuples(index=False):
            if _na(r.product) or not windows_installable(r.product):
                continue
            if str(r.product).startswith("Windows "):
                continue
            pkey = r.product.casefold()
            if int(r.patch_id) in self.app_ms[pkey]:
                continue
            fixed = "" if _na(r.fixed_build) else str(r.fixed_build).strip()
            self.app_ms[pkey][int(r.patch_id)] = AppMsRow(
                int(r.patch_id), normalize_kb(r.kb), normalize_kb(r.supersedes_kb), r.product,
                fixed, is_version(fixed), line_of(r.product, fixed), order_by_kb(r.product),
            )
        self.app_children: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for pkey, app_rows in self.app_ms.items():
            for a in app_rows.values():
                if a.kb and a.sup and a.sup != a.kb:
                    self.app_children[pkey][a.sup].add(a.kb)
        self.facts: dict[int, list[tuple]] = defaultdict(list)
        for row in f.ms_facts[["endpoint_id", "kind", "name", "version", "detail"]].itertuples(
            index=False, name=None
        ):
            self.facts[int(row[0])].append(tuple(None if _na(v) else v for v in row[1:]))
        self.programs: dict[int, list[tuple]] = defaultdict(list)
        cols = [
            "endpoint_id",
            "name",
            "version",
            "publisher",
            "product_code",
            "upgrade_code",
            "arch",
        ]
        for row in f.programs[cols].itertuples(index=False, name=None):
            self.programs[int(row[0])].append(row[1:])

    def quoted(self, kb: str) -> set[int]:
        """The Windows builds the rows of a KB quote, over every product."""
        if not hasattr(self, "_quoted"):
            found: dict[str, set[int]] = defaultdict(set)
            for rows in self.rows.values():
                for r in rows.values():
                    if r.build:
                        found[r.kb].add(r.build[0])
            self._quoted = found
        return self._quoted.get(kb, set())

    def desc(self, pkey: str, kb: str, apps: bool = False) -> set[str]:
        """KBs that supersede kb on the product, directly or through the chain."""
        key = (pkey, kb, apps)
        children = self.app_children if apps else self.children
        if key not in self._desc:
            seen: set[str] = set()
            todo = [kb]
            while todo:
                for child in children[pkey].get(todo.pop(), ()):
                    if child not in seen:
                        seen.add(child)
                        todo.append(child)
            seen.discard(kb)
            self._desc[key] = seen
        return self._desc[key]

    # ---- Microsoft -------------------------------------------------------------------------

    def ms(self, ep: Any, trace: Trace | None) -> list[dict[str, Any]]:
        def say(pid: int, line: str) -> None:
            if trace is not None:
                trace[pid].append(line)

        eid = int(ep.endpoint_id)
        product, _ = msrc_product(
            ep.os_name, ep.display_version, ep.build, ep.arch, ep.installation_type
        )
        server = self.server_of.get(eid)
        if product is None or server is None:
            return []
        pkey = product.casefold()
        prows = self.rows.get(pkey, {})
        avail = self.server_patches[int(server)]
        build, ubr = int(ep.build), (None if _na(ep.ubr) else int(ep.ubr))
        fam, hotpatch = family(build), bool(ep.hotpatch)
        installed = self.kbs[eid]

        classes: dict[bool, list[MsRow]] = {False: [], True: []}
        for r in prows.values():
            if r.patch_id not in avail:
                say(r.patch_id, f"{r.kb} is not available on patch server {server}: not considered")
            elif r.hot and not hotpatch:
                say(r.patch_id, f"{r.kb} is a hotpatch and the endpoint is not hotpatch-enabled")
            else:
                classes[r.hot].append(r)
        cands: list[MsRow] = []
        for rows in classes.values():
            kbs = {r.kb for r in rows}
            for r in rows:
                newer = sorted(self.desc(pkey, r.kb) & kbs)
                if newer:
                    say(
                        r.patch_id,
                        f"{r.kb} is superseded by available {', '.join(newer)}: "
                        "only the newest of a chain is a candidate",
                    )
                elif r.build and r.fam != fam:
                    say(
                        r.patch_id,
                        f"{r.kb}'s fixed build {r.fixed_build} is for build family "
                        f"{r.fam}; the endpoint runs {build}: not applicable",
                    )
                elif r.build and r.build[0] != build and build not in self.quoted(r.kb):
                    say(r.patch_id, f"{r.kb}'s fixed build {r.fixed()} is the sibling "
                        f"release's and no row of {r.kb} quotes build {build}: KB rule")
                    cands.append(replace(r, build=None, sibling=True, fixed_build=r.fixed()))
                else:
                    cands.append(r)

        cum = [
            prows[k]
            for k in installed
            if k in prows and prows[k].build and not prows[k].sec_only and prows[k].fam == fam
        ]
        cum_top = max(cum, key=lambda r: (r.ubr, r.kb)) if cum else None
        inst_ubr = cum_top.ubr if cum_top else None
        inst_kb, inst_fixed = (cum_top.kb, cum_top.fixed()) if cum_top else ("", "")
        # Hotpatch endpoints: a satisfied hotpatch covers regular builds up to its month's own.
        hp_covers = [
            self.next_regular(pkey, r)
            for r in prows.values()
            if r.hot
            and r.build
            and r.fam == fam
            and (r.kb in installed or (ubr is not None and ubr >= r.build[1]))
        ]
        hp_cover = max(hp_covers) if hotpatch and hp_covers else None

        unsat: list[MsRow] = []
        for r in cands:
            why = None
            if r.build and ubr is not None and ubr >= r.build[1]:
                why = f"build {build}.{ubr} >= fixed {r.fixed()}"
            elif r.kb in installed:
                why = f"{r.kb} is installed"
            elif self.desc(pkey, r.kb) & installed:
                why = f"installed {min(self.desc(pkey, r.kb) & installed)} supersedes it"
            elif r.build and inst_ubr is not None and inst_ubr >= r.build[1]:
                why = f"installed cumulative {inst_kb} has fixed build {inst_fixed}"
            elif r.build and not r.hot and hp_cover is not None and r.build[1] <= hp_cover:
                why = (
                    "covered by the hotpatch of the same month (or a later one) installed on "
                    "this hotpatch endpoint"
                )
            if why:
                say(r.patch_id, f"{r.kb} is a candidate and satisfied: {why}")
            else:
                say(r.patch_id, f"{r.kb} is a candidate and not satisfied")
                unsat.append(r)

        def rank(r: MsRow) -> tuple:
            return (r.ubr, not r.sec_only, r.standalone == hotpatch, r.kb_num)

        def top(rows: list[MsRow]) -> MsRow | None:
            best = max(rows, key=rank, default=None)
            tied = [r.kb for r in rows if best is not None and r is not best and r.ubr == best.ubr]
            if best is not None and tied:
                say(best.patch_id, f"{best.kb} ties with {', '.join(sorted(tied))} at fixed build "
                    f"{best.fixed()}; {TIE_RULE}: {best.kb} is chosen")
            return best

        reg = top([r for r in unsat if r.build and not r.hot])
        hot = top([r for r in unsat if r.build and r.hot])
        for r in unsat:
            best = hot if r.hot else reg
            if r.build and best is not None and r is not best:
                say(
                    r.patch_id,
                    f"not reported: {best.kb} (fixed {best.fixed()}) is reported "
                    "instead and lifts the build past this fix",
                )
        report: list[tuple[MsRow, str]] = [(r, "") for r in unsat if not r.build]
        if hot is not None:
            gate = self.gate(pkey, hot)
            eff = max((v for v in (ubr, inst_ubr) if v is not None), default=None)
            on_base = eff is not None and gate is not None and eff >= gate
            take_hot = reg is None or (on_base and reg.ubr <= self.next_regular(pkey, hot))
            if take_hot:
                note = "; hotpatch for this hotpatch endpoint"
                if reg is not None:
                    note += f"; regular {reg.kb} not needed with it"
                    say(reg.patch_id, f"not reported: hotpatch {hot.kb} is offered instead")
                report.append((hot, note))
                reg = None
            else:
                assert reg is not None
                say(
                    hot.patch_id,
                    f"not reported: endpoint not on its baseline (UBR {eff} vs {gate}) or "
                    f"regular {reg.kb} is newer",
                )
                note = (
                    f"; hotpatch {hot.kb} set aside: endpoint not on its baseline or the "
                    "regular update is newer"
                )
                report.append((reg, note))
                reg = None
        if reg is not None:
            report.append((reg, ""))
        out = []
        for r, note in report:
            installed_v = f"{build}.{ubr}" if ubr is not None else f"{build}"
            if r.build:
                head = (
                    f"build {installed_v} < fixed {r.fixed()}"
                    if ubr is not None
                    else f"build {build} (UBR unknown), fixed {r.fixed()}: KB rule"
                )
                if r.build[0] != build:
                    head += (f"; {r.build[0]} and {build} share a servicing branch: compared "
                             "by UBR")
            elif r.sibling:
                sib = int(str(r.fixed_build).split(".")[0])
                head = (f"fixed build {r.fixed_build} is for {sib}, which shares a servicing "
                        f"branch with {build}, and no row of {r.kb} quotes build {build}: "
                        "KB rule")
            elif not r.fixed_build:
                head = "no fixed build: KB rule"
            else:
                head = f"fixed build '{r.fixed_build}' is not a Windows build: KB rule"
            head += (
                f"; {r.kb} not installed"
                if r.build and ubr is not None
                else f"; {r.kb} not installed, nor a KB superseding it"
            )
            head += f"; supersedes {r.sup}" if r.sup else ""
            reason = head + note
            say(r.patch_id, f"MISSING: {reason}")
            out.append(
                {
                    "endpoint_id": eid,
                    "patch_id": r.patch_id,
                    "product": r.product,
                    "installed_version": installed_v,
                    "available_version": r.fixed() if r.build else None,
                    "reason": reason,
                }
            )
        return out

    # ---- Microsoft products beyond the OS ---------------------------------------------------

    def ms_entries(self, ep: Any) -> list[MsProduct]:
        """Every MSRC product the endpoint's programs and facts map to (`msproducts`)."""
        eid = int(ep.endpoint_id)
        os_product, _ = msrc_product(
            ep.os_name, ep.display_version, ep.build, ep.arch, ep.installation_type
        )
        out: list[MsProduct] = []
        for name, version, publisher, _pc, _uc, arch in self.programs[eid]:
            out += map_program(name, version, publisher, arch)
        for kind, name, version, detail in self.facts[eid]:
            out += map_fact(kind, name, version, detail, os_product)
        return out

    def ms_apps(self, ep: Any, trace: Trace | None) -> tuple[list[dict], list[dict]]:
        """(missing rows, notes) for the Microsoft products beyond the OS (`msapps` rules)."""

        def say(pid: int, line: str) -> None:
            if trace is not None:
                trace[pid].append(line)

        eid = int(ep.endpoint_id)
        entries = self.ms_entries(ep)
        notes = list(dict.fromkeys(m.note for m in entries if m.kind in (C2R, UNKNOWN)))
        chosen: dict[str, MsProduct] = {}
        for m in entries:
            pkey = m.product.casefold()
            if m.kind not in (PER_KB, CUMULATIVE) or pkey not in self.app_ms:
                continue
            best = chosen.get(pkey)
            if best is None or self._entry_key(m) >= self._entry_key(best):
                chosen[pkey] = m
        server = self.server_of.get(eid)
        installed = set(self.kbs[eid])
        for name, *_ in self.programs[eid]:
            installed.update(kbs_in_name(name))
        unsat: list[tuple[MsProduct, AppMsRow, int]] = []
        for pkey, m in sorted(chosen.items()):
            if server is None:
                continue
            avail = self.server_patches[int(server)]
            rows = self.app_ms[pkey]
            in_server = [a for a in rows.values() if a.patch_id in avail]
            kbs = {a.kb for a in in_server if a.kb}
            inst_orders = [self._order(a) for a in rows.values() if a.kb and a.kb in installed]
            inst_order = max(inst_orders) if inst_orders else None
            for a in in_server:
                newer = sorted(self.desc(pkey, a.kb, apps=True) & kbs) if a.kb else []
                if newer:
                    say(a.patch_id, f"{a.kb} is superseded by available {', '.join(newer)} on "
                        f"{a.product}: only the newest of a chain is a candidate")
                    continue
                if not a.line_ok:
                    say(a.patch_id, f"{a.product}: fixed build {a.fixed} belongs to another "
                        "cumulative update: not applicable")
                    continue
                why = None
                if a.kb and a.kb in installed:
                    why = f"{a.kb} is installed"
                elif a.kb and self.desc(pkey, a.kb, apps=True) & installed:
                    via = min(self.desc(pkey, a.kb, apps=True) & installed)
                    why = f"installed {via} supersedes it"
                elif a.version and m.compare and version_key(m.compare) >= version_key(a.fixed):
                    why = f"installed {m.compare} >= fixed {a.fixed}"
                elif (m.kind == CUMULATIVE and self._order(a) >= 0 and inst_order is not None
                      and inst_order >= self._order(a)):
                    why = "an installed update of this product is as new or newer"
                if why:
                    say(a.patch_id, f"{a.product}: {a.kb or a.fixed} is a candidate and "
                        f"satisfied: {why}")
                else:
                    say(a.patch_id, f"{a.product}: {a.kb or a.fixed} is a candidate and not "
                        f"satisfied ({m.source})")
                    unsat.append((m, a, self._order(a)))
        report: list[tuple[MsProduct, AppMsRow]] = []
        groups: dict[str, list[tuple[MsProduct, AppMsRow, int]]] = defaultdict(list)
        for m, a, order in unsat:
            if m.kind == CUMULATIVE:
                groups[m.group].append((m, a, order))
            else:
                report.append((m, a))
        for items in groups.values():
            best = max(items, key=lambda x: (x[2], x[1].kb_num, x[1].patch_id))
            for _m, a, _ in items:
                if a is not best[1]:
                    say(a.patch_id, f"not reported: {best[1].kb or best[1].fixed} is the newest "
                        f"fix of {best[0].product} and is reported instead (cumulative)")
            report.append((best[0], best[1]))
        report.sort(key=lambda x: (x[1].patch_id, x[1].product))
        out: list[dict] = []
        first: dict[int, tuple[MsProduct, AppMsRow]] = {}
        for m, a in report:
            if a.patch_id in first:
                say(a.patch_id, f"also listed for {a.product}: reported once, for "
                    f"{first[a.patch_id][1].product}")
            else:
                first[a.patch_id] = (m, a)
        for m, a in first.values():
            comparable = a.version and m.compare is not None
            reason = reason_for(m.kind, a.product, m.version, m.compare, a.kb, a.fixed,
                                comparable, a.sup)
            say(a.patch_id, f"MISSING: {reason}")
            out.append({
                "endpoint_id": eid,
                "patch_id": a.patch_id,
                "product": a.product,
                "installed_version": m.version,
                "available_version": a.fixed or None,
                "reason": reason,
            })
        return out, [{"endpoint_id": eid, "reason": n} for n in notes]

    @staticmethod
    def _entry_key(m: MsProduct) -> tuple:
        return (m.compare is not None, version_key(m.compare or ""), m.source)

    def _order(self, a: AppMsRow) -> float:
        """How new a fix is within its product (see `msapps`): KB number or version rank."""
        if a.by_kb:
            return float(a.kb_num)
        return float(self._version_rank(a.fixed)) if a.version else -1.0

    def _version_rank(self, fixed: str) -> int:
        if not hasattr(self, "_ranks"):
            keys = sorted({version_key(a.fixed) for rows in self.app_ms.values()
                           for a in rows.values() if a.version})
            self._ranks = keys
        return bisect.bisect_left(self._ranks, version_key(fixed))

    def gate(self, pkey: str, h: MsRow) -> float | None:
        """UBR at which a hotpatch endpoint is on the baseline of hotpatch h: the hotpatch it
        supersedes, or else the last regular build below it."""
        rows = self.rows[pkey]
        pred = rows.get(h.sup or "")
        options: list[float] = []
        if pred is not None and pred.hot and pred.build and pred.fam == h.fam:
            options.append(pred.build[1])
        below = [r.ubr for r in self._regular(pkey, h) if r.ubr < h.ubr]
        if below:
            options.append(max(below))
        return min(options) if options else None

    def next_regular(self, pkey: str, h: MsRow) -> float:
        """The regular build of hotpatch h's own month: the first one above it (inf if none)."""
        above = [r.ubr for r in self._regular(pkey, h) if r.ubr > h.ubr]
        return min(above) if above else math.inf

    def _regular(self, pkey: str, h: MsRow) -> list[MsRow]:
        return [r for r in self.rows[pkey].values() if not r.hot and r.build and r.fam == h.fam]

    # ---- third party -----------------------------------------------------------------------

    def newest(self, server: int, package_id: str, arch: str) -> tuple | None:
        avail = self.server_patches[server]
        rows = [
            r
            for r in self.app_rows
            if r[0] in avail and r[1] == package_id and catalog_arch(r[4]) in (arch, "neutral")
        ]
        return max(rows, key=lambda r: (version_key(r[3]), r[0]), default=None)

    def apps_for(self, eid: int, trace: Trace | None) -> tuple[list[dict], list[dict]]:
        def say(key: int | str, line: str) -> None:
            if trace is not None:
                trace[key].append(line)

        server = self.server_of.get(eid)
        amb: list[dict] = []
        groups: dict[tuple[str, str], list[tuple[tuple, str, tuple]]] = defaultdict(list)

        def ambiguous(name: str, pkgs: tuple[str, ...], reason: str) -> None:
            amb.append(
                {
                    "endpoint_id": eid,
                    "program": name,
                    "package_ids": ", ".join(pkgs),
                    "reason": reason,
                }
            )
            for pkg in pkgs:
                say(pkg, f"program {name!r}: {reason}; reported as ambiguous, not guessed")

        for name, version, publisher, pc, uc, arch in self.programs[eid]:
            if not self.apps.knows(name, pc, uc):
                continue
            m = self.apps.match(name, publisher, pc, uc, arch)
            if not m.package_ids:
                continue
            if m.ambiguous:
                ambiguous(name, m.package_ids, f"matches several packages by {m.via}")
                continue
            pkg = m.package_ids[0]
            if _na(version) or not str(version).strip():
                ambiguous(name, (pkg,), "installed version unknown (no DisplayVersion)")
                continue
            if server is None:
                continue
            if m.arch is not None:
                new = self.newest(int(server), pkg, m.arch)
                label = m.arch
            else:
                per_arch = [n for a in ALL_ARCHES if (n := self.newest(int(server), pkg, a))]
                if not per_arch:
                    continue
                if len({version_key(n[3]) for n in per_arch}) > 1:
                    ambiguous(
                        name,
                        (pkg,),
                        "architecture unknown and the newest version differs by architecture",
                    )
                    continue
                new = max(per_arch, key=lambda n: n[0])
                label = "arch unknown"
            if new is None:
                say(pkg, f"program {name!r} ({label}): no version available for that arch")
                continue
            source = f" (from {m.arch_source})" if m.arch_source else ""
            say(
                pkg,
                f"program {name!r} {version} matches {pkg} by {m.via}, arch {label}{source}; "
                f"newest available: {new[3]} (patch {new[0]})",
            )
            groups[(pkg, label)].append(((version_key(version), version), name, new))
        rows = []
        for (_pkg, label), entries in groups.items():
            entries.sort(key=lambda e: e[0])
            (vk, version), name, new = entries[-1]
            if vk >= version_key(new[3]):
                say(_pkg, f"{clean_name(name)} {version} ({label}) >= {new[3]}: up to date")
                continue
            reason = f"{clean_name(name)} {version} ({label}) < {new[3]}"
            if len(entries) > 1:
                reason += f" (also installed: {', '.join(e[0][1] for e in entries[:-1])})"
            rows.append(
                {
                    "endpoint_id": eid,
                    "patch_id": int(new[0]),
                    "product": new[2],
                    "installed_version": version,
                    "available_version": new[3],
                    "reason": reason,
                    "_key": (vk, reason),
                }
            )
        merged: dict[int, list[dict]] = defaultdict(list)
        for r in rows:
            merged[r["patch_id"]].append(r)
        out = []
        for pid, rs in merged.items():
            rs.sort(key=lambda r: r["_key"])
            row = {k: v for k, v in rs[0].items() if k != "_key"}
            row["reason"] = "; ".join(r["reason"] for r in rs)
            say(pid, f"MISSING: {row['reason']}")
            out.append(row)
        return out, amb


def scan_reference(frames: ScanFrames) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(missing, ambiguous, unmapped) computed endpoint by endpoint."""
    ref = Reference(frames)
    missing: list[dict] = []
    ambiguous: list[dict] = []
    unmapped: list[dict] = []
    for ep in ref.f.endpoints.itertuples(index=False):
        product, why = msrc_product(
            ep.os_name, ep.display_version, ep.build, ep.arch, ep.installation_type
        )
        if product is None:
            unmapped.append({"endpoint_id": int(ep.endpoint_id), "reason": why})
        elif product.casefold() not in ref.rows:
            unmapped.append(
                {"endpoint_id": int(ep.endpoint_id), "reason": f"no catalog rows for {product}"}
            )
        missing += ref.ms(ep, None)
        more, notes = ref.ms_apps(ep, None)
        missing += more
        unmapped += notes
        apps, amb = ref.apps_for(int(ep.endpoint_id), None)
        missing += apps
        ambiguous += amb
    return (
        _frame(missing, MISSING_COLUMNS, ["endpoint_id", "patch_id"]),
        _frame(ambiguous, AMBIGUOUS_COLUMNS, list(AMBIGUOUS_COLUMNS), dedupe=True),
        _frame(unmapped, UNMAPPED_COLUMNS, ["endpoint_id", "reason"]),
    )


def _frame(
    rows: list[dict], spec: dict[str, str], order: list[str], dedupe: bool = False
) -> pd.DataFrame:
    if not rows:
        return empty_frame(spec)
    df = pd.DataFrame(rows, columns=list(spec)).astype(spec)
    if dedupe:
        df = df.drop_duplicates()
    return df.sort_values(order).reset_index(drop=True)
