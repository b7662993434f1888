"""Prefect deployments generated from the schedules stored in the database.

The database is the one source of truth for *when* things run: administrators edit schedules
through the CLI, the API or the console, and `patchflow serve` turns the current settings into
deployments (`build_specs`) and keeps them applied. A spec is plain data with a fingerprint, so
the watcher can tell "changed" from "unchanged" without asking Prefect.

- `patchflow-sync/server-<server>@<instance>`: one per patch server with a sync schedule.
- `patchflow-scan/policy-<policy>@<instance>`: one per policy with a scan schedule (every N
  weeks from a fixed start).
- `patchflow-cycle/cycle-<policy>@<instance>`: instead of the scan, for a policy whose schedule
  runs the patch cycle (`patchflow cycle schedule POLICY`): the same rule, run if missed and
  all, since the cycle scans.
- `patchflow-report/reports@<instance>`: when a report schedule is set.
- `patchflow-feeds-sync/feeds@<instance>`: the vulnerability feeds, daily at `[feeds] sync_at`
  (default 03:00; "off" turns it off).

The instance name (`[prefect] instance` or PATCHFLOW_INSTANCE, default the host name) is in
every deployment's name and tags, so two patchflow installations can share one Prefect server:
each `serve` only ever replaces or deletes the deployments of its own instance.

Every deployment runs at most one flow run at a time; further runs wait (ENQUEUE) instead of
running twice, so a long sync is never overlapped by the next scheduled one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import zoneinfo
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from deployments.schedules import daily_rrule, scan_rrule, sync_rrule
from models import PatchServer, Policy
from patchflow import config
from patchflow.config import ConfigError
from patchflow.reporting import report_schedule

# Deployments that `patchflow serve` owns carry this tag: only those are ever deleted by it.
SERVED_TAG = "patchflow-serve"
REPORT_DEPLOYMENT = "reports"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_INSTANCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
_MAX_SLUG = 48
DEFAULT_INSTANCE = "default"


def instance_name() -> str:
    """This installation's name on a shared Prefect server: PATCHFLOW_INSTANCE, else
    `[prefect] instance`, else the short host name (made safe), else "default"."""
    raw = os.environ.get("PATCHFLOW_INSTANCE") or config.setting("prefect", "instance")
    if raw not in (None, ""):
        value = str(raw).strip()
        if not _INSTANCE.match(value):
            raise ConfigError(f"[prefect] instance {value!r} must be 1-40 letters, digits, "
                              "'.', '_' or '-', starting with a letter or digit")
        return value
    host = _UNSAFE.sub("-", socket.gethostname().split(".")[0]).strip("-._").lower()[:40]
    return host if host and _INSTANCE.match(host) else DEFAULT_INSTANCE


def instance_tag(instance: str | None = None) -> str:
    return f"instance:{instance or instance_name()}"


def deployment_tags(flow: str, instance: str, served: bool = True) -> tuple[str, ...]:
    """`patchflow`, the flow kind, the instance; `patchflow-serve` on those `serve` owns."""
    return ("patchflow", flow, instance_tag(instance)) + ((SERVED_TAG,) if served else ())


# The Prefect flow name where it is not `patchflow-<flow>`.
FLOW_NAMES = {"feeds": "patchflow-feeds-sync"}


@dataclass(frozen=True)
class DeploymentSpec:
    """What one deployment should look like; JSON-safe parameters only."""

    name: str
    flow: str  # "sync" | "scan" | "cycle" | "report" | "feeds"
    parameters: dict[str, Any]
    rrule: str
    timezone: str
    description: str
    # For "run if missed": the policy behind a scan deployment (None elsewhere).
    policy: str | None = None
    tags: tuple[str, ...] = field(default=())

    @property
    def full_name(self) -> str:
        """As Prefect shows it: `patchflow-scan/policy-workstations@hq`."""
        return f"{FLOW_NAMES.get(self.flow, 'patchflow-' + self.flow)}/{self.name}"

    def fingerprint(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


def slug(name: str) -> str:
    """`name` as Prefect accepts it in a deployment name (it forbids '/', '%', '&', '<', '>'),
    kept readable: unsafe characters become '-', and a changed or shortened name gets a short
    hash of the real one, so two names differing only in punctuation never collide."""
    text = _UNSAFE.sub("-", name).strip("-") or "x"
    if text == name and len(text) <= _MAX_SLUG:
        return text
    return f"{text[:_MAX_SLUG].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"


def deployment_name(kind: str, name: str | None, instance: str | None = None) -> str:
    """`server-<name>@<instance>`, `policy-<name>@<instance>`, `reports@<instance>`: with the
    flow's name in front, `patchflow-scan/policy-workstations@hq` in the Prefect UI."""
    base = kind if name is None else f"{kind}-{slug(name)}"
    return f"{base}@{instance or instance_name()}"


def schedule_timezone() -> str:
    """`[schedule] timezone` in patchflow.toml (IANA name), default UTC; checked here so a typo
    is one line at start-up instead of a Prefect validation error later."""
    name = str(config.setting("schedule", "timezone", "UTC") or "UTC")
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"[schedule] timezone {name!r} is not a known time zone "
                          "(use an IANA name such as Europe/Berlin or UTC)") from None
    return name


def sync_spec(server: PatchServer, timezone: str) -> DeploymentSpec | None:
    if not (server.schedule_frequency and server.schedule_weekday and server.schedule_at):
        return None
    rule = sync_rrule(server.schedule_frequency, server.schedule_weekday, server.schedule_at,
                      server.schedule_week_of_month)
    when = f"{server.schedule_frequency} on {server.schedule_weekday} at {server.schedule_at}"
    if server.schedule_frequency == "monthly":
        when += f" (week {server.schedule_week_of_month or 1} of the month)"
    instance = instance_name()
    return DeploymentSpec(
        name=deployment_name("server", server.name, instance), flow="sync",
        parameters={"server_name": server.name}, rrule=rule, timezone=timezone,
        description=f"Sync patch server {server.name}: {when} ({timezone}).",
        tags=deployment_tags("sync", instance),
    )


def scan_spec(policy: Policy, timezone: str) -> DeploymentSpec | None:
    """The policy's scheduled scan, or its scheduled cycle when the schedule runs the cycle
    (one rule, one "run if missed" for both: the cycle's scan step is the scheduled scan)."""
    if not (policy.scan_weekday and policy.scan_at):
        return None
    every = max(1, policy.scan_every_weeks or 1)
    rule = scan_rrule(policy.scan_weekday, policy.scan_at, every, policy.scan_start)
    weeks = "every week" if every == 1 else f"every {every} weeks"
    instance = instance_name()
    when = f"{weeks} on {policy.scan_weekday} at {policy.scan_at} ({timezone})."
    missed = (" Runs at start-up when a scheduled {} was missed."
              if policy.run_if_missed else "{}")
    if policy.cycle_scheduled:
        return DeploymentSpec(
            name=deployment_name("cycle", policy.name, instance), flow="cycle",
            tags=deployment_tags("cycle", instance),
            parameters={"policy": policy.name, "trigger": "scheduled"},
            rrule=rule, timezone=timezone, policy=policy.name,
            description=(f"Patch cycle of policy {policy.name}: {when}"
                         + missed.format("cycle")
                         + (" Installs unattended (automatic install)." if policy.auto_install
                            else " Pauses before installing until an administrator resumes "
                                 "it (automatic install is off).")),
        )
    return DeploymentSpec(
        name=deployment_name("policy", policy.name, instance), flow="scan",
        tags=deployment_tags("scan", instance),
        parameters={"selection": {"policy": policy.name}, "trigger": "scheduled"},
        rrule=rule, timezone=timezone, policy=policy.name,
        description=f"Scan the endpoints of policy {policy.name}: {when}"
                    + missed.format("scan"),
    )


def report_spec(schedule: report_schedule.ReportSchedule, timezone: str) -> DeploymentSpec:
    rule = scan_rrule(schedule.weekday, schedule.at, 1)
    params: dict[str, Any] = {"kinds": list(schedule.kinds), "created_by": "schedule"}
    if schedule.email:
        params["email"] = list(schedule.email)
    instance = instance_name()
    return DeploymentSpec(
        name=deployment_name(REPORT_DEPLOYMENT, None, instance), flow="report",
        parameters=params, rrule=rule, timezone=timezone,
        tags=deployment_tags("report", instance),
        description=(f"Reports ({', '.join(schedule.kinds)}) every {schedule.weekday} at "
                     f"{schedule.at} ({timezone})"
                     + (f", mailed to {', '.join(schedule.email)}." if schedule.email else ".")),
    )


FEEDS_DEPLOYMENT = "feeds"
DEFAULT_FEEDS_AT = "03:00"
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def feeds_spec(timezone: str) -> DeploymentSpec | None:
    """The vulnerability feeds, daily by default (`[feeds] sync_at = "HH:MM"`, or "off")."""
    raw = config.setting("feeds", "sync_at", DEFAULT_FEEDS_AT)
    at = str(raw if raw not in (None, "") else DEFAULT_FEEDS_AT).strip()
    if at.lower() == "off" or raw is False:
        return None
    if not _HHMM.match(at):
        raise ConfigError(f"[feeds] sync_at must be HH:MM (24-hour) or \"off\", not {raw!r}")
    instance = instance_name()
    return DeploymentSpec(
        name=deployment_name(FEEDS_DEPLOYMENT, None, instance), flow="feeds",
        parameters={}, rrule=daily_rrule(at), timezone=timezone,
        tags=deployment_tags("feeds", instance),
        description=(f"Vulnerability feeds (KEV, Mozilla, NVD; those with a source): daily at "
                     f"{at} ({timezone})."),
    )


def build_specs(session: Session, timezone: str | None = None) -> list[DeploymentSpec]:
    """Every deployment the database asks for, sorted by name."""
    tz = timezone or schedule_timezone()
    specs: list[DeploymentSpec] = []
    for server in session.scalars(select(PatchServer).order_by(PatchServer.name)):
        spec = sync_spec(server, tz)
        if spec:
            specs.append(spec)
    for policy in session.scalars(select(Policy).order_by(Policy.name)):
        spec = scan_spec(policy, tz)
        if spec:
            specs.append(spec)
    report = report_schedule.load(session)
    if report:
        specs.append(report_spec(report, tz))
    feeds = feeds_spec(tz)
    if feeds:
        specs.append(feeds)
    return sorted(specs, key=lambda s: s.name)


def load_specs(timezone: str | None = None) -> list[DeploymentSpec]:
    from models.db import session_scope

    with session_scope() as session:
        return build_specs(session, timezone)


ENTRYPOINTS = {flow: f"deployments/patchflow_flows.py:{flow}"
               for flow in ("sync", "scan", "cycle", "report", "feeds")}


def prefect_yaml(specs: list[DeploymentSpec], work_pool: str, source_dir: str,
                 work_queue: str | None = None) -> str:
    """A prefect.yaml (for `prefect deploy --all`) with the same deployments `patchflow serve`
    would serve, for teams that run them on workers instead. `source_dir` is where the
    patchflow source tree is on the worker machines (the entrypoints are relative to it)."""
    import yaml

    pool: dict[str, Any] = {"name": work_pool}
    if work_queue:
        pool["work_queue_name"] = work_queue
    document = {
        "name": "patchflow",
        "prefect-version": _prefect_version(),
        "pull": [{"prefect.deployments.steps.set_working_directory": {
            "directory": source_dir}}],
        "deployments": [
            {
                "name": spec.name,
                "description": spec.description,
                "entrypoint": ENTRYPOINTS[spec.flow],
                "parameters": spec.parameters,
                "schedules": [{"rrule": spec.rrule, "timezone": spec.timezone}],
                "concurrency_limit": {"limit": 1, "collision_strategy": "ENQUEUE"},
                # Not SERVED_TAG: `serve` must never delete what was deployed to workers.
                "tags": [t for t in spec.tags if t != SERVED_TAG],
                "work_pool": dict(pool),
            }
            for spec in specs
        ],
    }
    header = ("# Generated by `patchflow deployments export` from the schedules in the "
              "database.\n# Deploy with: prefect deploy --all --prefect-file THIS_FILE\n")
    return header + yaml.dump(document, Dumper=_dumper(), sort_keys=False, allow_unicode=True,
                              width=100)


def _quoted_multiline(dumper: Any, value: str) -> Any:
    # An RRULE is two lines; '"DTSTART:...\\nRRULE:..."' reads better than a folded block.
    style = '"' if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


def _dumper() -> Any:
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    Dumper.add_representer(str, _quoted_multiline)
    return Dumper


def _prefect_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prefect")
    except PackageNotFoundError:
        return "3"
