"""A synthetic fleet over a real catalog, for the benchmark and the equivalence test.

Endpoints get OS builds, UBRs and installed KBs drawn from the catalog's own FixedBuilds (below,
at and above them, some with UBR unknown, some hotpatch-enabled), and ~150 programs each: catalog
packages under their real display names, codes and versions (x86/x64, duplicates, missing arch)
among filler programs the catalog does not know. numpy does the drawing so 50,000 endpoints take
seconds, not minutes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from applicability.frames import ScanFrames, make_frame
from applicability.osmap import parse_fixed_build

# os_name, display_version, build, arch, installation_type, weight, hotpatch-capable
OS_MIX: list[tuple[str, str | None, int, str, str, float, bool]] = [
    ("Windows 11 Pro", "23H2", 22631, "x64", "Client", 0.22, False),
    ("Windows 11 Enterprise", "24H2", 26100, "x64", "Client", 0.14, True),
    ("Windows 11 Pro", "24H2", 26100, "arm64", "Client", 0.02, False),
    ("Windows 10 Pro", "23H2", 22631, "x64", "Client", 0.03, False),  # ProductName quirk
    ("Windows 11 Pro", "22H2", 22621, "x64", "Client", 0.04, False),
    ("Windows 10 Enterprise", "22H2", 19045, "x64", "Client", 0.20, False),
    ("Windows 10 Pro", "22H2", 19045, "x86", "Client", 0.02, False),
    ("Windows 10 Enterprise LTSC 2019", "1809", 17763, "x64", "Client", 0.03, False),
    ("Windows Server 2022 Datacenter", "21H2", 20348, "x64", "Server", 0.08, True),
    ("Windows Server 2022 Standard", "21H2", 20348, "x64", "Server Core", 0.03, False),
    ("Windows Server 2019 Standard", "1809", 17763, "x64", "Server", 0.07, False),
    ("Windows Server 2016 Standard", "1607", 14393, "x64", "Server", 0.04, False),
    ("Windows Server 2012 R2 Standard", None, 9600, "x64", "Server", 0.03, False),
    ("Windows Server 2025 Datacenter", "24H2", 26100, "x64", "Server", 0.03, True),
    ("Windows 7 Enterprise", None, 7601, "x64", "Client", 0.02, False),
]

_FILLER_VENDORS = ["Contoso", "Fabrikam", "Northwind", "Tailspin", "Litware", "Adatum", "Proseware"]
_FILLER_WORDS = [
    "Studio",
    "Agent",
    "Viewer",
    "Sync",
    "Toolkit",
    "Runtime",
    "Driver",
    "Client",
    "Manager",
    "Helper",
    "Reader",
    "Editor",
    "Update Service",
    "Launcher",
]


def _filler_pool(rng: np.random.Generator, size: int) -> pd.DataFrame:
    vendor = rng.choice(_FILLER_VENDORS, size)
    word = rng.choice(_FILLER_WORDS, size)
    num = rng.integers(1, 60, size)
    arch_tag = rng.choice(["", " (x64)", " (x86)", " 64-bit"], size, p=[0.7, 0.1, 0.1, 0.1])
    names = [f"{v} {w} {n}{a}" for v, w, n, a in zip(vendor, word, num, arch_tag, strict=True)]
    versions = [f"{a}.{b}.{c}" for a, b, c in rng.integers(0, 30, (size, 3))]
    return pd.DataFrame(
        {"name": names, "version": versions, "publisher": [f"{v} Ltd." for v in vendor]}
    )


def _app_pool(app_catalog: pd.DataFrame) -> pd.DataFrame:
    """Program entries as real installs of catalog packages would show them."""
    rows = []
    for r in app_catalog.itertuples(index=False):
        if r.arch not in ("x86", "x64", "arm64"):
            continue
        names = list(r.display_names) or [f"{r.package_name} {r.version}"]
        codes = list(r.product_codes) or [None]
        for name in names[:2]:
            for arch in (r.arch, None):
                rows.append((name, r.version, r.publisher, codes[0], None, arch))
        # an older install of the same package, same naming
        major, _, rest = r.version.partition(".")
        if major.isdigit() and int(major) > 0:
            old = f"{int(major) - 1}.{rest}" if rest else str(int(major) - 1)
            rows.append((names[0].replace(r.version, old), old, r.publisher, None, None, r.arch))
    # Hard cases: a name two packages share, a swapped PuTTY UpgradeCode without arch, no version.
    rows += [
        ("Adobe Acrobat Reader", "24.002.20687", "Adobe", None, None, None),
        (
            "PuTTY release 0.76",
            "0.76.0.0",
            "Simon Tatham",
            None,
            "{C9EAA861-2B72-4FAF-9FEE-EEB1AD5FD15E}",
            None,
        ),
        ("7-Zip 23.01 (x64)", None, "Igor Pavlov", None, None, "x64"),
        ("Mozilla Firefox (x64 en-US)", "128.0.3", "Mozilla", None, None, None),
    ]
    return pd.DataFrame(
        rows, columns=["name", "version", "publisher", "product_code", "upgrade_code", "arch"]
    )


def synthetic_fleet(
    ms_catalog: pd.DataFrame,
    app_catalog: pd.DataFrame,
    n_endpoints: int,
    programs_per_endpoint: int = 150,
    seed: int = 0,
) -> ScanFrames:
    """A `ScanFrames` for n endpoints on two patch servers (the second misses ~10% of patches)."""
    rng = np.random.default_rng(seed)
    n = n_endpoints
    mix = pd.DataFrame(
        OS_MIX,
        columns=[
            "os_name",
            "display_version",
            "build",
            "arch",
            "installation_type",
            "weight",
            "hot_ok",
        ],
    )
    pick = rng.choice(len(mix), n, p=(mix["weight"] / mix["weight"].sum()).to_numpy())
    eps = mix.iloc[pick].reset_index(drop=True)
    eps.insert(0, "endpoint_id", np.arange(1, n + 1))
    eps.insert(1, "hostname", [f"host-{i:06d}" for i in range(1, n + 1)])
    eps["hotpatch"] = eps["hot_ok"] & (rng.random(n) < 0.3)

    # UBRs from the catalog's FixedBuilds of the same build: below, at, or above one of them.
    fixed = ms_catalog["fixed_build"].dropna().map(parse_fixed_build).dropna()
    by_build: dict[int, list[int]] = {}
    for b, u in fixed:
        by_build.setdefault(b, []).append(u)
    ubr = np.zeros(n, dtype=float)
    for b, idx in eps.groupby("build").groups.items():
        pool = np.array(sorted(set(by_build.get(int(b), [1000]))))
        base = rng.choice(pool, len(idx))
        ubr[np.asarray(idx)] = base + rng.choice([-1, 0, 0, 7], len(idx))
    ubr[rng.random(n) < 0.05] = np.nan
    eps["ubr"] = pd.array(np.where(np.isnan(ubr), None, ubr), dtype="Int64")
    endpoints = make_frame("endpoints", eps)

    # Installed KBs: a few catalog KBs of the endpoint's builds plus noise KBs.
    kbs = ms_catalog[["kb", "fixed_build"]].dropna().drop_duplicates("kb")
    kb_pool = kbs["kb"].to_numpy()
    k = rng.integers(2, 8, n)
    inst_e = np.repeat(endpoints["endpoint_id"].to_numpy(), k)
    inst_kb = rng.choice(kb_pool, len(inst_e))
    noise = rng.random(len(inst_e)) < 0.5
    inst_kb = np.where(
        noise, np.char.add("KB4", rng.integers(100000, 999999, len(inst_e)).astype(str)), inst_kb
    )
    installed = make_frame("installed_kbs", pd.DataFrame({"endpoint_id": inst_e, "kb": inst_kb}))

    # Programs: catalog apps (about 5 per endpoint) among filler.
    apps = _app_pool(app_catalog)
    filler = _filler_pool(rng, 20000)
    n_app = rng.integers(2, 9, n)
    n_fill = np.maximum(programs_per_endpoint - n_app, 0)
    a_idx = rng.integers(0, len(apps), n_app.sum())
    f_idx = rng.integers(0, len(filler), n_fill.sum())
    progs_app = apps.iloc[a_idx].assign(
        endpoint_id=np.repeat(endpoints["endpoint_id"].to_numpy(), n_app)
    )
    progs_fill = filler.iloc[f_idx].assign(
        endpoint_id=np.repeat(endpoints["endpoint_id"].to_numpy(), n_fill),
        product_code=None,
        upgrade_code=None,
        arch=rng.choice(["x64", "x86", None], len(f_idx)),
    )
    programs = make_frame("programs", pd.concat([progs_app, progs_fill], ignore_index=True))

    patch_ids = np.union1d(ms_catalog["patch_id"].unique(), app_catalog["patch_id"].unique())
    second = patch_ids[rng.random(len(patch_ids)) < 0.9]
    server_patches = make_frame(
        "server_patches",
        pd.DataFrame(
            {
                "server_id": np.r_[np.ones(len(patch_ids), int), np.full(len(second), 2)],
                "patch_id": np.r_[patch_ids, second],
            }
        ),
    )
    availability = make_frame(
        "availability",
        pd.DataFrame(
            {
                "endpoint_id": endpoints["endpoint_id"],
                "server_id": rng.choice([1, 2], n, p=[0.7, 0.3]),
            }
        ),
    )
    return ScanFrames(
        endpoints=endpoints,
        installed_kbs=installed,
        programs=programs,
        ms_catalog=ms_catalog,
        app_catalog=app_catalog,
        availability=availability,
        server_patches=server_patches,
    )
