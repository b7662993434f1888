"""Benchmark the vulnerability feeds: a full sync of the real feed files, then the scan of a
synthetic fleet with and without the per-pair enrichment.

Usage: python -m bench.feeds [--endpoints 2000] [--fixtures DIR]

On a fresh SQLite home (temporary folder), the same setup as bench.scan (the 2024 MSRC year and
the winget fixtures, a synthetic fleet), then:

1. feed sync: KEV, the Mozilla advisories and the NVD records of ../shared/fixtures/vuln as
   offline sources, through the feed tasks' `.fn` (no Prefect engine), plus the patch links.
2. baseline: the scan (bench.scan.direct_scan) and reading its results (`load_missing`), what
   `patchflow missing --json` did before the feeds.
3. with enrichment: the same scan and read plus `enrich_missing` (pair CVEs, severity, CVSS,
   exploited, KEV due date, risk), what `missing --json` does now.

The ratio is (3) / (2); target <= 1.3x. The enrichment is done when results are read,
not inside the scan, so the scan itself is unchanged; the ratio says what a reader pays.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from bench.scan import DEFAULT_FIXTURES, _inputs, direct_scan, setup


def sync_feeds(vuln: Path) -> dict[str, float | int]:
    from prefect.logging import disable_run_logger

    from patchflow.upstreams import FEEDS
    from tasks import feeds as t

    sources = {"kev": next((vuln / "kev").glob("*.json.gz")), "mozilla": vuln / "mozilla",
               "nvd": vuln / "nvd"}
    start = time.perf_counter()
    records = {}
    with disable_run_logger():
        for name, path in sources.items():
            source = str(path)
            plan = t.plan.fn(name, source, None, "")
            batches = [t.sync_batch.fn(name, source, refs)
                       for refs in FEEDS[name].batches(source, plan)]
            result = t.summarise.fn(name, source, plan, batches)
            if result.status != "Successful":
                raise RuntimeError(f"{name}: {result.message}")
            records[name] = result.records or 0
        links = t.link_patches.fn()
    return {"seconds": time.perf_counter() - start, **records, "links": links}


def read_missing(enrich: bool) -> tuple[float, int]:
    from models.db import session_scope
    from patchflow.catalog.vuln_query import enrich_missing
    from patchflow.scanning.missing_query import load_missing

    start = time.perf_counter()
    with session_scope() as session:
        frame = load_missing(session)
        if enrich:
            frame = enrich_missing(session, frame)
    return time.perf_counter() - start, len(frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.feeds",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--endpoints", type=int, default=2000, help="fleet size (2000)")
    parser.add_argument("--fixtures", type=Path, default=DEFAULT_FIXTURES)
    args = parser.parse_args(argv)
    vuln = args.fixtures / "vuln"
    if not vuln.is_dir():
        parser.error(f"{vuln} not found")
    with tempfile.TemporaryDirectory(prefix="patchflow-bench-feeds-") as tmp:
        work = Path(tmp)
        os.environ["PREFECT_HOME"] = str(work / "prefect")
        os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
        from patchflow.ops import prefect_env

        prefect_env.configure()
        msrc_dir, winget_root, packages, described = _inputs(args.fixtures, work)
        url = f"sqlite:///{work / 'patchflow.db'}"
        print(f"bench.feeds: {args.endpoints:,} synthetic endpoints against {described}; "
              f"load average {os.getloadavg()[0]:.1f}")
        setup(str(work / "home"), url, str(msrc_dir), str(winget_root), packages,
              args.endpoints)
        feeds = sync_feeds(vuln)
        print(f"feed sync: {feeds['seconds']:.1f}s (KEV {feeds['kev']}, Mozilla "
              f"{feeds['mozilla']} CVEs, NVD {feeds['nvd']} CVEs, {feeds['links']} patch links)")
        base_scan = direct_scan(2000)["wall"]
        base_read, pairs = read_missing(enrich=False)
        enr_scan = direct_scan(2000)["wall"]
        enr_read, _ = read_missing(enrich=True)
        base, enriched = base_scan + base_read, enr_scan + enr_read
        print(f"scan + read, without enrichment: {base:.2f}s ({base_scan:.2f} + "
              f"{base_read:.2f}); {pairs:,} missing pairs")
        print(f"scan + read, with enrichment:    {enriched:.2f}s ({enr_scan:.2f} + "
              f"{enr_read:.2f})")
        ratio = enriched / base
        print(f"ratio: {ratio:.2f}x (target <= 1.3x): {'met' if ratio <= 1.3 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
