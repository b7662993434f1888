"""A small, varied fleet for the report tests, written with bulk inserts through the models.

Deterministic (seeded random) but irregular enough that an off-by-one in a filter or a join
shows: nested groups and ungrouped endpoints, every scan state, EULA-gated patches with and
without acceptance, patches without KB or release date, failed-then-succeeded installs, and
names with HTML metacharacters and non-ASCII letters.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

from sqlalchemy import insert
from sqlalchemy.orm import Session

from models import (
    Endpoint,
    EulaAcceptance,
    Group,
    InstalledProgram,
    InstalledUpdate,
    InstallJob,
    InstallJobItem,
    MissingPatch,
    Patch,
    PatchInstaller,
)

UTC = dt.UTC
NOW = dt.datetime(2024, 3, 20, 12, 0, tzinfo=UTC)

# (key, kb, package_id, title, severity, category, restart, eula_required, release_date)
PATCHES: list[tuple[str, str | None, str | None, str, str, str, str, bool, dt.date | None]] = [
    ("cu-jan", "KB5034123", None, "2024-01 Cumulative Update for Windows 11 Version 23H2 "
     "for x64-based Systems (KB5034123)", "Critical", "Security Updates", "Required", False,
     dt.date(2024, 1, 9)),
    ("cu-feb", "KB5034765", None, "2024-02 Cumulative Update for Windows 11 Version 23H2 "
     "for x64-based Systems (KB5034765)", "Critical", "Security Updates", "Required", False,
     dt.date(2024, 2, 13)),
    ("net", "KB5034466", None, "2024-01 .NET Framework 3.5 & 4.8.1 <Cumulative> Update "
     "(KB5034466)", "Important", "Update Rollups", "May Require", False, dt.date(2024, 1, 9)),
    ("office", "KB5002537", None, "Security Update for Microsoft Office 2016 (KB5002537)",
     "Important", "Security Updates", "Not Required", True, dt.date(2024, 2, 13)),
    ("defender", "KB2267602", None, "Security Intelligence Update for Microsoft Defender "
     "Antivirus", "Unspecified", "Definition Updates", "Not Required", False, None),
    ("7zip", None, "7zip.7zip", "7-Zip 23.01 (x64)", "Moderate", "Applications",
     "Not Required", False, dt.date(2023, 6, 20)),
    ("java", None, "Oracle.JavaRuntimeEnvironment", "Java 8 Update 401 (Oracle) — JRE",
     "Low", "Applications", "May Require", True, dt.date(2024, 1, 16)),
    ("npp", None, "Notepad++.Notepad++", "Notepad++ 8.6.4", "Unspecified", "Applications",
     "Not Required", False, dt.date(2024, 2, 19)),
    ("vlc", None, "VideoLAN.VLC", "VLC media player 3.0.20", "Moderate", "Applications",
     "Not Required", True, dt.date(2023, 11, 2)),
]
ACCEPTED_EULAS = ("office",)  # java and vlc need a EULA nobody accepted

GROUPS = [("HQ", None), ("Finance", "HQ"), ("Payroll", "Finance"), ("Branch Zürich", None)]
STATES = ["Missing Patches", "Up-to-Date", "Not Scanned", "Scanning", "Scan Failed"]


@dataclass
class Seeded:
    groups: dict[str, int] = field(default_factory=dict)
    patches: dict[str, int] = field(default_factory=dict)
    endpoints: dict[str, int] = field(default_factory=dict)
    missing_pairs: int = 0


def seed(session: Session, endpoints: int = 36, rng_seed: int = 7) -> Seeded:
    """Write the fleet; returns the ids by name. Runs inside the caller's session."""
    rng = random.Random(rng_seed)
    out = Seeded()
    for name, parent in GROUPS:
        group = Group(name=name, parent_id=out.groups[parent] if parent else None)
        session.add(group)
        session.flush()
        out.groups[name] = group.id

    for key, kb, package, title, severity, category, restart, eula, released in PATCHES:
        patch = Patch(
            source="msrc" if kb else "winget", ukey=key, kb=kb, package_id=package, title=title,
            vendor="Microsoft" if kb else "Vendor", category=category, severity=severity,
            restart_required=restart, eula_required=eula, release_date=released,
            version="23.01" if key == "7zip" else None,
        )
        session.add(patch)
        session.flush()
        out.patches[key] = patch.id
    session.execute(insert(EulaAcceptance), [
        {"patch_id": out.patches[k], "accepted_by": "admin", "accepted_at": NOW}
        for k in ACCEPTED_EULAS
    ])
    session.execute(insert(PatchInstaller), [
        {"patch_id": out.patches["7zip"], "url": "https://example.org/7z2301-x64.msi",
         "sha256": "0" * 64, "type": "msi", "arch": "x64",
         "product_code": "{23170F69-40C1-2702-2301-000001000000}"},
    ])

    group_cycle = [*out.groups.values(), None]
    endpoint_rows = []
    for i in range(endpoints):
        # Host 0 is the odd one: non-ASCII and markup-like characters in its name.
        name = "pc-ÄÖ-<0>&" if i == 0 else f"pc-{i:03d}"
        state = STATES[0] if i % 3 else STATES[i // 3 % len(STATES)]
        endpoint_rows.append({
            "hostname": name, "group_id": group_cycle[i % len(group_cycle)],
            "scan_state": state, "os_name": "Windows 11", "os_build": 22631, "os_ubr": 3007,
        })
    session.execute(insert(Endpoint), endpoint_rows)
    for endpoint in session.query(Endpoint.id, Endpoint.hostname):
        out.endpoints[endpoint.hostname] = endpoint.id

    keys = list(out.patches)
    missing_rows = []
    states = {row["hostname"]: row["scan_state"] for row in endpoint_rows}
    for name, eid in sorted(out.endpoints.items()):
        if states[name] in ("Up-to-Date", "Not Scanned"):
            continue  # Scanning and Scan Failed keep the rows of their previous scan
        for key in rng.sample(keys, rng.randint(1, 5)):
            detected = NOW - dt.timedelta(days=rng.randint(0, 60), minutes=rng.randint(0, 999),
                                          microseconds=rng.randint(0, 999_999))
            missing_rows.append({
                "endpoint_id": eid, "patch_id": out.patches[key], "product": "Windows 11",
                "installed_version": "22631.3007" if key.startswith("cu") else "19.00",
                "available_version": "22631.3155" if key.startswith("cu") else "23.01",
                "reason": f"build 22631.3007 < fixed build; «{key}» missing",
                "detected_at": detected,
            })
    session.execute(insert(MissingPatch), missing_rows)
    out.missing_pairs = len(missing_rows)

    _seed_installs(session, out, rng)
    session.flush()
    return out


def _seed_installs(session: Session, out: Seeded, rng: random.Random) -> None:
    """Jobs: two admins; a failed then succeeded pair, a still-failed pair, a reboot pending."""
    hosts = sorted(out.endpoints)
    job1 = InstallJob(created_by="alice", created_at=NOW - dt.timedelta(days=20),
                      status="done")
    job2 = InstallJob(created_by="bob", created_at=NOW - dt.timedelta(days=5), status="done")
    session.add_all([job1, job2])
    session.flush()
    items = []
    for i, host in enumerate(hosts[:12]):
        patch = ["cu-jan", "net", "7zip"][i % 3]
        state = "succeeded" if i % 4 else "failed"
        items.append({
            "job_id": job1.id, "endpoint_id": out.endpoints[host], "patch_id": out.patches[patch],
            "state": state, "exit_code": 0 if state == "succeeded" else 1603,
            "finished_at": NOW - dt.timedelta(days=19, hours=i),
            "updated_at": NOW - dt.timedelta(days=19, hours=i),
        })
    # Job 2 retries the failures of job 1: the first succeeds, the second fails again.
    failed = [it for it in items if it["state"] == "failed"]
    retry = []
    for n, item in enumerate(failed):
        state = "succeeded" if n == 0 else "failed"
        retry.append({**item, "job_id": job2.id, "state": state,
                      "finished_at": NOW - dt.timedelta(days=4, hours=n),
                      "updated_at": NOW - dt.timedelta(days=4, hours=n)})
    retry.append({"job_id": job2.id, "endpoint_id": out.endpoints[hosts[-1]],
                  "patch_id": out.patches["cu-feb"], "state": "reboot pending", "exit_code": 3010,
                  "finished_at": NOW - dt.timedelta(days=3), "updated_at": NOW})
    session.execute(insert(InstallJobItem), items + retry)

    # What inventories report: KBs by number (one also installed by job 1), a 7-Zip MSI.
    updates = []
    for i, host in enumerate(hosts[12:24]):
        kb = ["KB5034123", "KB5034466", "KB5002537"][i % 3]
        updates.append({"endpoint_id": out.endpoints[host], "kb": kb,
                        "installed_on": dt.date(2024, 3, 1) + dt.timedelta(days=i)})
    updates.append({"endpoint_id": out.endpoints[hosts[1]], "kb": "KB5034123",
                    "installed_on": dt.date(2024, 3, 2)})
    updates.append({"endpoint_id": out.endpoints[hosts[2]], "kb": "KB9999999",
                    "installed_on": dt.date(2024, 3, 2)})  # not in the catalog: ignored
    session.execute(insert(InstalledUpdate), updates)
    session.execute(insert(InstalledProgram), [
        {"endpoint_id": out.endpoints[hosts[30]], "name": "7-Zip 23.01 (x64 edition)",
         "version": "23.01.00.0", "publisher": "Igor Pavlov",
         "product_code": "{23170F69-40C1-2702-2301-000001000000}",
         "install_date": dt.date(2024, 3, 15)},
        {"endpoint_id": out.endpoints[hosts[31]], "name": "7-Zip 19.00", "version": "19.00",
         "publisher": "Igor Pavlov", "product_code": "{OTHER}", "install_date": None},
    ])


# --- direct SQL, for cross-checking every figure -------------------------------------------------


def sql_rows(url: str, query: str, **params: object) -> list[tuple]:
    """Run raw SQL on a separate engine: the figures under test never check themselves."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(query), params)]
    finally:
        engine.dispose()


def sql_scalar(url: str, query: str, **params: object) -> object:
    rows = sql_rows(url, query, **params)
    return rows[0][0] if rows else None


def seed_home() -> Seeded:
    """Seed the database of the current PATCHFLOW_HOME (the `home` fixture's)."""
    from models.db import session_scope

    with session_scope() as session:
        return seed(session)
