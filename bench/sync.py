"""Benchmark the catalog sync: the twelve 2024 MSRC months plus the winget fixtures.

Usage: python -m bench.sync [--no-mariadb] [--no-flow] [--profile] [--fixtures DIR]

What is measured, on a fresh patchflow home each time:

- bare parse: read, gunzip and parse the same files (parse_cvrf, parse_package_dir), nothing
  stored. This is the floor any sync has to pay.
- store, first run: the product's sync path without Prefect: plan_upstream and
  sync_upstream_batch for msrc (in batches of the connector's batch_size, as the flow does)
  and winget, called through the tasks' `.fn`, against a patch server added with
  patchflow.catalog.servers.add_server, into SQLite and into a fresh MariaDB database
  (mysql+pymysql://root@127.0.0.1:3306, dropped afterwards).
  `.fn` skips Prefect's task engine but not get_run_logger(), which needs a run context, so the
  tasks' logger is swapped for a stdlib logger while they run.
- store, second run: the same sync again; every document is unchanged and skipped by hash.
- Prefect flow: the real `flows.sync.sync` flow on a fresh SQLite home, cold (the first flow in
  the process starts Prefect's temporary API server) and warm, to show Prefect's own cost.

Peak memory is the process's peak resident set size during each phase (Linux VmHWM, reset
before the phase; elsewhere ru_maxrss, which only grows). Targets: the whole year on
SQLite in under 15 s, and within 3x of the bare parse.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import logging
import os
import pstats
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import mariadb_database

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = ROOT.parent / "shared" / "fixtures"
TARGET_SECONDS = 15.0
TARGET_RATIO = 3.0
_ID_LINE = re.compile(rb"^PackageIdentifier[ \t]*:[ \t]*['\"]?([^'\"#\r\n]+?)['\"]?[ \t]*$",
                      re.MULTILINE)


@dataclass
class Phase:
    name: str
    seconds: float
    documents: int
    patches: int | None = None
    peak_mb: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Memory


def _reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)


def _peak_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _rss_mb() -> float:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return _peak_mb()


@contextlib.contextmanager
def _measure() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    _reset_peak()
    start = time.perf_counter()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start
        out["peak_mb"] = _peak_mb()


# --------------------------------------------------------------------------------------------
# Inputs


def _inputs(fixtures: Path, work: Path) -> tuple[Path, Path, list[str]] | str:
    """(MSRC mirror folder of the twelve months, winget root, package ids) or why not."""
    months = sorted((fixtures / "msrc").glob("2024-*.xml.gz"))
    winget_root = fixtures / "winget" / "manifests"
    if len(months) != 12:
        return f"expected twelve 2024-*.xml.gz in {fixtures / 'msrc'}, found {len(months)}"
    if not winget_root.is_dir():
        return f"no winget manifests at {winget_root}"
    mirror = work / "msrc"
    mirror.mkdir()
    for month in months:  # the fixtures folder also holds an excerpt; mirror the year only
        (mirror / month.name).symlink_to(month)
    ids: set[str] = set()
    for manifest in winget_root.rglob("*.yaml"):
        match = _ID_LINE.search(manifest.read_bytes())
        if match:
            ids.add(match.group(1).decode().strip())
    return mirror, winget_root, sorted(ids, key=str.casefold)


def bare_parse(mirror: Path, winget_root: Path, packages: list[str], repeat: int) -> Phase:
    """Best of `repeat`: the floor, so the store runs' ratio to it is not flattered by noise."""
    from sources import msrc, winget

    best: dict[str, float] | None = None
    for _ in range(repeat):
        patches = 0
        with _measure() as m:
            for file in sorted(mirror.iterdir()):
                doc = msrc.parse_cvrf(file.read_bytes(), key=file.name.split(".")[0])
                patches += len(doc.patches)
            folders = winget.find_package_dirs(winget_root, packages)
            for package_id in packages:
                patches += len(winget.parse_package_dir(folders[package_id]).patches)
        if best is None or m["seconds"] < best["seconds"]:
            best = m
    assert best is not None
    return Phase(f"bare parse, best of {repeat} (nothing stored)", best["seconds"],
                 12 + len(packages), patches, best["peak_mb"])


# --------------------------------------------------------------------------------------------
# The store path


@contextlib.contextmanager
def _home(work: Path, name: str, url: str) -> Iterator[None]:
    """A fresh patchflow home on `url`, schema at head; its engines are dropped afterwards."""
    from models.db import dispose_all
    from models.migrate import upgrade

    home = work / name
    home.mkdir()
    os.environ["PATCHFLOW_HOME"] = str(home)
    os.environ["PATCHFLOW_DATABASE_URL"] = url
    upgrade(url)
    try:
        yield
    finally:
        dispose_all()


def _add_server(mirror: Path, winget_root: Path, packages: list[str]) -> int:
    from models.db import session_scope
    from patchflow.catalog import servers

    opts = servers.ServerOptions(host="bench.example", msrc_source=str(mirror),
                                 winget_source=str(winget_root), winget_packages=packages)
    with session_scope() as session:
        server = servers.add_server(session, "bench", opts)
        session.flush()
        return server.id


@contextlib.contextmanager
def _plain_logger() -> Iterator[None]:
    """get_run_logger() needs a Prefect run context; `.fn` has none, so lend a stdlib one."""
    from tasks import sync as t

    original = t.get_run_logger
    t.get_run_logger = lambda: logging.getLogger("bench.sync")  # type: ignore[assignment]
    try:
        yield
    finally:
        t.get_run_logger = original  # type: ignore[assignment]


@contextlib.contextmanager
def _split_timers() -> Iterator[dict[str, float]]:
    """Wall time spent parsing and storing inside the sync tasks (wrappers, not a profiler,
    so the split is not skewed by profiling overhead on Python-heavy code)."""
    from patchflow.catalog import syncing
    from sources import msrc, winget

    spent = {"parse": 0.0, "store": 0.0, "status": 0.0}
    targets = [(msrc, "parse_cvrf_month", "parse"), (winget, "parse_package_dir", "parse"),
               (syncing, "store", "store"), (syncing, "progress", "status")]
    originals = [(module, name, getattr(module, name)) for module, name, _ in targets]

    def wrap(func, bucket: str):  # type: ignore[no-untyped-def]
        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                spent[bucket] += time.perf_counter() - start
        return timed

    for module, name, bucket in targets:
        setattr(module, name, wrap(getattr(module, name), bucket))
    try:
        yield spent
    finally:
        for module, name, func in originals:
            setattr(module, name, func)


def sync_without_prefect(server_id: int) -> dict[str, int]:
    """What flows.sync.sync does for a microsoft upstream, minus Prefect's engine."""
    from patchflow import upstreams
    from tasks import sync as t

    with _plain_logger():
        t.begin_sync.fn("bench", None)
        results = []
        for kind in ("msrc", "winget"):  # the bench's server: a mirror folder and winget
            refs: list | None = None
            if upstreams.get(kind).plans_ahead:
                plan = t.plan_upstream.fn(server_id, kind)
                if plan["error"]:
                    raise RuntimeError(plan["error"])
                refs = plan["refs"]
            size = upstreams.get(kind).batch_size
            batches = [refs[i : i + size] for i in range(0, len(refs), size)] \
                if refs is not None else [None]
            done = 0
            for batch in batches:
                results.append(t.sync_upstream_batch.fn(server_id, kind, batch, done,
                                                        len(refs or [])))
                done += len(batch or [])
        t.finish_sync.fn(server_id, "Successful", "bench")
    totals = {k: sum(r[k] for r in results) for k in ("stored", "skipped", "failed", "patches")}
    if totals["failed"]:
        errors = [e for r in results for e in r["errors"]]
        raise RuntimeError(f"{totals['failed']} documents failed: {errors[0]}")
    return totals


def _catalog_counts(server_id: int) -> tuple[int, int]:
    from sqlalchemy import func, select

    from models import Patch, ServerPatch
    from models.db import session_scope

    with session_scope() as session:
        patches = session.scalar(select(func.count()).select_from(Patch)) or 0
        offered = session.scalar(
            select(func.count()).select_from(ServerPatch).where(ServerPatch.server_id == server_id)
        ) or 0
    return patches, offered


def bench_store(label: str, url: str, work: Path, mirror: Path, winget_root: Path,
                packages: list[str], profile: bool) -> list[Phase]:
    documents = 12 + len(packages)
    phases = []
    with _home(work, label.lower(), url):
        server_id = _add_server(mirror, winget_root, packages)
        profiler = cProfile.Profile() if profile else None
        with _measure() as m, _split_timers() as split:
            if profiler:
                profiler.enable()
            first = sync_without_prefect(server_id)
            if profiler:
                profiler.disable()
        patches, offered = _catalog_counts(server_id)
        phases.append(Phase(f"{label}: store, first run", m["seconds"], documents, patches,
                            m["peak_mb"], note=f"{first['stored']} stored, {offered} offered",
                            extra=_split(split, m["seconds"])))
        with _measure() as m, _split_timers() as split:
            second = sync_without_prefect(server_id)
        phases.append(Phase(f"{label}: store, second run", m["seconds"], documents,
                            _catalog_counts(server_id)[0], m["peak_mb"],
                            note=f"{second['skipped']} unchanged, {second['stored']} stored",
                            extra=_split(split, m["seconds"])))
        if profiler:
            _print_profile(label, profiler)
    return phases


def _split(spent: dict[str, float], total: float) -> dict[str, float]:
    rest = total - sum(spent.values())
    return {k: round(v, 3) for k, v in {**spent, "other": rest}.items()}


def bench_flow(work: Path, mirror: Path, winget_root: Path, packages: list[str]) -> list[Phase]:
    """The real Prefect flow; the first call in a process starts Prefect's temporary server."""
    from flows.sync import sync

    documents = 12 + len(packages)
    phases = []
    url = f"sqlite:///{work / 'flow' / 'patchflow.db'}"
    with _home(work, "flow", url):
        _add_server(mirror, winget_root, packages)
        for run in ("cold, first run", "warm, second run"):
            with _measure() as m:
                outcome = sync("bench")
            if outcome["status"] != "Successful":
                raise RuntimeError(f"flow run: {outcome['status']}: {outcome['message']}")
            phases.append(Phase(f"SQLite: Prefect flow, {run}", m["seconds"], documents,
                                None, m["peak_mb"], note=outcome["message"]))
    return phases


def _print_profile(label: str, profiler: cProfile.Profile) -> None:
    for sort in ("tottime", "cumulative"):
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats(sort).print_stats(25)
        print(f"\n--- profile of {label} store, first run, by {sort} ---")
        text = out.getvalue()
        print(text[text.find("   ncalls"):].rstrip())


# --------------------------------------------------------------------------------------------
# MariaDB


# --------------------------------------------------------------------------------------------
# Report


def _table(phases: list[Phase], parse: Phase) -> str:
    header = ("phase", "seconds", "docs/s", "patches", "peak RSS MB", "x parse", "notes")
    rows = [header]
    for p in phases:
        rows.append((
            p.name,
            f"{p.seconds:.2f}",
            f"{p.documents / p.seconds:.1f}" if p.seconds else "-",
            str(p.patches) if p.patches is not None else "-",
            f"{p.peak_mb:.0f}" if p.peak_mb is not None else "-",
            f"{p.seconds / parse.seconds:.2f}" if p is not parse else "1.00",
            p.note,
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:6], widths[1:6],
                                                                            strict=True)]
        lines.append("  ".join([*cells, row[6]]).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _verdict(phases: list[Phase], parse: Phase) -> list[str]:
    first = next((p for p in phases if p.name == "SQLite: store, first run"), None)
    if first is None:
        return []
    ratio = first.seconds / parse.seconds
    return [
        f"target: SQLite first run < {TARGET_SECONDS:.0f} s: {first.seconds:.2f} s -> "
        f"{'met' if first.seconds < TARGET_SECONDS else 'MISSED'}",
        f"target: SQLite first run <= {TARGET_RATIO:.0f}x bare parse: {ratio:.2f}x -> "
        f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sync",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES,
                        help="folder holding msrc/ and winget/ (default: ../shared/fixtures)")
    parser.add_argument("--no-mariadb", action="store_true", help="SQLite only")
    parser.add_argument("--no-flow", action="store_true", help="skip the Prefect flow runs")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the first store run on each database and print the top")
    parser.add_argument("--repeat", type=int, default=3,
                        help="bare parse repetitions, the best counts (default 3)")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args(argv)

    saved = {k: os.environ.get(k) for k in ("PATCHFLOW_HOME", "PATCHFLOW_DATABASE_URL")}
    try:
        return _run(args)
    finally:
        for key, value in saved.items():  # leave the caller's environment as it was
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="patchflow-bench-") as tmp:
        work = Path(tmp)
        os.environ["PATCHFLOW_HOME"] = str(work / "home")
        os.environ["PREFECT_HOME"] = str(work / "prefect")
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
        from patchflow.ops import prefect_env

        prefect_env.configure()
        logging.getLogger("bench.sync").setLevel(logging.WARNING)

        found = _inputs(args.fixtures, work)
        if isinstance(found, str):
            print(f"bench.sync skipped: {found}")
            return 0
        mirror, winget_root, packages = found
        print(f"bench.sync: 12 MSRC months (2024, XML gzip) + {len(packages)} winget packages "
              f"from {args.fixtures}; {os.cpu_count()} CPUs, Python "
              f"{sys.version.split()[0]}")

        import tasks.sync  # noqa: F401  (import Prefect before timing anything)

        print(f"RSS before the first phase: {_rss_mb():.0f} MB (Python, SQLAlchemy, Prefect "
              "imported)")
        parse = bare_parse(mirror, winget_root, packages, args.repeat)
        phases = [parse]
        sqlite_url = f"sqlite:///{work / 'sqlite' / 'patchflow.db'}"
        phases += bench_store("SQLite", sqlite_url, work, mirror, winget_root, packages,
                              args.profile)
        if not args.no_mariadb:
            with mariadb_database("patchflow_bench") as url:
                if url:
                    phases += bench_store("MariaDB", url, work, mirror, winget_root, packages,
                                          args.profile)
        if not args.no_flow:
            phases += bench_flow(work, mirror, winget_root, packages)

        print()
        print(_table(phases, parse))
        flows = [p for p in phases if "Prefect flow" in p.name]
        first = next(p for p in phases if p.name == "SQLite: store, first run")
        if flows:
            print(f"\nPrefect cost: cold flow run {flows[0].seconds - first.seconds:+.2f} s over "
                  f"the store path without Prefect (temporary API server start-up included); "
                  f"the warm, unchanged run took {flows[-1].seconds:.2f} s.")
        splits = [p for p in phases if p.extra]
        if splits:
            print("\nWhere the store runs' time goes (wall seconds inside the sync tasks):")
            for p in splits:
                share = p.extra["store"] / p.seconds * 100 if p.seconds else 0
                print(f"  {p.name:28}  parse {p.extra['parse']:5.2f}  store "
                      f"{p.extra['store']:5.2f} ({share:4.1f}%)  status updates "
                      f"{p.extra['status']:5.2f}  other {p.extra['other']:5.2f}")
        for line in _verdict(phases, parse):
            print(line)
        if args.json:
            print(json.dumps([p.__dict__ for p in phases], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
