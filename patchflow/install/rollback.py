"""Rollback: an install job whose action is "uninstall" (`patchflow install rollback`).

What to run on each endpoint is decided when the job is created, from what the endpoint last
reported (its inventory), with the agent's own rules (agent/uninstall.py): a Microsoft update
the endpoint has is removed by KB with wusa; a package installed by an MSI by its ProductCode;
a package installed by an exe only by its UninstallString with the installer type's known
silent switches. The inventory contract (agent/schema.py) carries no UninstallString today, so
an exe-installed program is refused with that reason rather than started and left waiting for
clicks. A refused endpoint's item fails at once with the reason, so the job shows every endpoint
asked for; a request where every endpoint is refused writes nothing.

From there on a rollback is an ordinary job: the install flow dispatches its items (they
already know their "installer", so there is nothing to resolve or download), agents report
results, the job ends with its summary, and the agent's fresh inventory makes the next scan see
the patch missing again. `uninstall_spec` is pure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from agent.uninstall import EXE, MSI, MSU, UninstallRefused, is_product_code, uninstall_command
from models import (
    Endpoint,
    InstalledProgram,
    InstalledUpdate,
    InstallJob,
    Patch,
    PatchInstaller,
    Policy,
    PolicyRing,
)
from models.base import utcnow
from models.bulk import chunks
from patchflow.catalog.catalog_query import find_patch
from patchflow.errors import NotFoundError, UserError
from patchflow.fleet.endpoints import get_endpoint
from patchflow.install import states as st
from patchflow.install.eula import patch_label
from patchflow.install.items import ITEMS, add_events, event
from patchflow.install.settings import InstallSettings
from patchflow.install.upgrades import installed_entry
from sources.filters import package_name
from sources.versions import version_key

UNINSTALL = "uninstall"
MSI_TYPES = ("msi", "wix")


@dataclass(frozen=True)
class Verdict:
    """For one endpoint: the uninstall spec, or why not; `installed` False when the patch is
    not on the endpoint at all (nothing to roll back there)."""

    spec: dict[str, Any] | None
    reason: str | None = None
    installed: bool = True


def uninstall_spec(patch: Mapping[str, Any], kbs: Iterable[str],
                   programs: Sequence[Mapping[str, Any]],
                   installers: Sequence[Mapping[str, Any]]) -> Verdict:
    """How to uninstall `patch` (id, kb, package_id, version, title, vendor) from an endpoint
    that reported `kbs` and `programs` (inventory program entries); `installers` are the
    patch's catalog installers (type, arch, product_code, upgrade_code, display_names)."""
    label = patch_label_of(patch)
    if patch.get("kb") and not patch.get("package_id"):
        kb = str(patch["kb"]).upper()
        if kb not in {str(k).upper() for k in kbs}:
            return Verdict(None, f"{kb} is not installed here (per its last inventory)", False)
        return _checked({"type": MSU, "kb": kb, "program": None})
    info = {**patch, "package_name": package_name(str(patch.get("title") or ""),
                                                  str(patch.get("version") or ""))}
    wanted = version_key(str(patch.get("version") or ""))
    found: dict[str, Any] | None = None
    used: Mapping[str, Any] = {}
    others: list[str] = []
    for installer in [*installers, {}]:
        entry = installed_entry(programs, info, installer)
        if entry is None:
            continue
        if version_key(str(entry.get("version") or "")) == wanted:
            found, used = dict(entry), installer
            break
        others.append(f"{entry.get('name')} {entry.get('version') or ''}".strip())
    if found is None:
        if others:
            return Verdict(None, f"{label} is not what is installed here ({others[0]} is): "
                                 "nothing to roll back", False)
        return Verdict(None, f"{label} is not installed here (per its last inventory)", False)
    program = {k: found.get(k) for k in ("name", "version", "arch", "product_code")}
    shown = f"{found.get('name')} {found.get('version') or ''}".strip()
    kind = str(used.get("type") or (installers[0].get("type") if installers else "") or "").lower()
    if kind in MSI_TYPES or (not kind and is_product_code(found.get("product_code"))):
        if not is_product_code(found.get("product_code")):
            return Verdict(None, f"the endpoint's inventory reports no ProductCode for {shown!r} "
                                 "(an MSI install): it cannot be uninstalled silently")
        return _checked({"type": MSI, "product_code": str(found["product_code"]).upper(),
                         "program": program})
    return _checked({"type": EXE, "installer_type": kind or "exe",
                     "uninstall_string": found.get("uninstall_string"), "program": program},
                    shown)


def _checked(spec: dict[str, Any], shown: str | None = None) -> Verdict:
    """The spec if the agent's rules can build its command, else the refusal's reason."""
    try:
        uninstall_command(spec)
    except UninstallRefused as exc:
        return Verdict(None, f"{shown}: {exc}" if shown else str(exc))
    return Verdict(spec)


def patch_label_of(patch: Mapping[str, Any]) -> str:
    if patch.get("package_id"):
        return f"{patch['package_id']}@{patch.get('version')}"
    return str(patch.get("kb") or f"patch {patch.get('id')}")


# --- creating the job ---------------------------------------------------------------------------


def rollback_patch(session: Session, ref: str) -> Patch:
    """A patch by id, KB or PACKAGE@VERSION; a bare PACKAGE only when the catalog has one
    version of it (what is installed, not what is missing, is what a rollback removes)."""
    ref = (ref or "").strip()
    try:
        return find_patch(session, ref)
    except NotFoundError:
        versions = list(session.scalars(select(Patch).where(Patch.package_id == ref)
                                        .order_by(Patch.id)))
        if len(versions) == 1:
            return versions[0]
        if not versions:
            raise
        raise NotFoundError(f"{ref} has several versions ("
                            + ", ".join(p.ukey for p in versions)
                            + "): name the one to roll back as PACKAGE@VERSION") from None


def ring_endpoints(session: Session, ring: str) -> tuple[str, list[int]]:
    """('POLICY/RING', active endpoint ids) of a ring named RING or POLICY/RING: the endpoints
    the cycle would give that ring's installs (patchflow/cycle/rings.py)."""
    from patchflow.cycle import rings
    from patchflow.cycle.plan import policy_endpoints
    from patchflow.fleet.tree import Tree

    policy_name, _, name = ring.strip().rpartition("/")
    query = select(PolicyRing, Policy).join(Policy, Policy.id == PolicyRing.policy_id) \
        .where(PolicyRing.name == name)
    if policy_name:
        query = query.where(Policy.name == policy_name)
    found = session.execute(query.order_by(Policy.name)).all()
    if not found:
        raise NotFoundError(f"no ring named {ring.strip()!r} "
                            "(`patchflow cycle rings list POLICY` lists a policy's rings)")
    if len(found) > 1:
        raise UserError(f"ring {name!r} exists in policies "
                        + ", ".join(p.name for _r, p in found) + ": give --ring POLICY/RING")
    _ring, policy = found[0]
    specs = rings.load(session, policy.id)
    tree = Tree.load(session)
    ids = []
    for endpoint in policy_endpoints(session, policy):
        chain: set[int] = set()
        group = endpoint.group_id
        while group is not None and group not in chain:
            chain.add(group)
            group = tree.parents.get(group)
        if rings.ring_of(chain, specs) == name:
            ids.append(int(endpoint.id))
    return f"{policy.name}/{name}", ids


def _inventories(session: Session, endpoint_ids: list[int]
                 ) -> tuple[dict[int, set[str]], dict[int, list[dict[str, Any]]]]:
    kbs: dict[int, set[str]] = {e: set() for e in endpoint_ids}
    programs: dict[int, list[dict[str, Any]]] = {e: [] for e in endpoint_ids}
    for chunk in chunks(endpoint_ids):
        for endpoint_id, kb in session.execute(
                select(InstalledUpdate.endpoint_id, InstalledUpdate.kb)
                .where(InstalledUpdate.endpoint_id.in_(chunk))):
            kbs[endpoint_id].add(kb)
        for row in session.execute(
                select(InstalledProgram.endpoint_id, InstalledProgram.name,
                       InstalledProgram.version, InstalledProgram.publisher,
                       InstalledProgram.product_code, InstalledProgram.upgrade_code,
                       InstalledProgram.arch).where(InstalledProgram.endpoint_id.in_(chunk))):
            entry = dict(row._mapping)
            programs[entry.pop("endpoint_id")].append(entry)
    return kbs, programs


def _catalog(session: Session, patch_id: int) -> list[dict[str, Any]]:
    out = []
    for inst in session.scalars(select(PatchInstaller).where(PatchInstaller.patch_id == patch_id)
                                .order_by(PatchInstaller.id)):
        try:
            names = [e.get("DisplayName") for e in json.loads(inst.apps_and_features or "[]")
                     if isinstance(e, dict) and e.get("DisplayName")]
        except ValueError:
            names = []
        out.append({"type": inst.type, "arch": inst.arch, "product_code": inst.product_code,
                    "upgrade_code": inst.upgrade_code, "display_names": names})
    return out


def create_rollback(session: Session, ref: str, endpoints: list[str] | None, ring: str | None,
                    created_by: str, *, allow_restart: bool = False,
                    settings: InstallSettings | None = None) -> tuple[InstallJob, dict[str, Any]]:
    """An uninstall job for `ref` on the named endpoints or a ring's, in the caller's
    transaction, and what it holds: {"patch", "scope", "to_uninstall", "refused" (host →
    reason), "skipped" (hosts of the ring without the patch)}. Refuses
    (UserError, nothing written) a bad request, a named endpoint without the patch, and a
    request where no endpoint can uninstall it silently."""
    if bool(endpoints) == bool(ring and ring.strip()):
        raise UserError("give --endpoints H1,H2 or --ring R (one of them)")
    patch = rollback_patch(session, ref)
    label = patch_label(patch)
    if endpoints:
        hosts: dict[int, str] = {}
        for name in dict.fromkeys(h.strip() for h in endpoints if h.strip()):
            found = get_endpoint(session, name)
            if found.revoked:
                raise UserError(f"endpoint {found.hostname} is revoked: re-enroll its agent first")
            hosts[found.id] = found.hostname
        if not hosts:
            raise UserError("--endpoints names no endpoint")
        scope = ", ".join(hosts.values())
    else:
        scope, ids = ring_endpoints(session, str(ring))
        hosts = dict(session.execute(select(Endpoint.id, Endpoint.hostname)
                                     .where(Endpoint.id.in_(ids))).tuples().all()) if ids else {}
        if not hosts:
            raise UserError(f"ring {scope} has no active endpoint: nothing to roll back")
    info = {"id": patch.id, "kb": patch.kb, "package_id": patch.package_id,
            "version": patch.version, "title": patch.title, "vendor": patch.vendor}
    installers = _catalog(session, patch.id)
    kbs, programs = _inventories(session, sorted(hosts))
    ready: dict[int, dict[str, Any]] = {}
    refused: dict[int, str] = {}
    skipped: list[str] = []
    for endpoint_id, hostname in sorted(hosts.items(), key=lambda pair: pair[1]):
        verdict = uninstall_spec(info, kbs[endpoint_id], programs[endpoint_id], installers)
        if verdict.spec is not None:
            ready[endpoint_id] = verdict.spec
        elif not verdict.installed and endpoints:
            raise UserError(f"{hostname}: {verdict.reason}")
        elif not verdict.installed:
            skipped.append(hostname)
        else:
            refused[endpoint_id] = str(verdict.reason)
    if not ready:
        if refused:
            first = next(iter(refused))
            raise UserError(f"{label} cannot be rolled back on {hosts[first]}: {refused[first]}")
        raise UserError(f"{label} is installed on no endpoint of ring {scope} (per their last "
                        "inventories): nothing to roll back")
    settings = settings or InstallSettings.from_config()
    now = utcnow()
    job = InstallJob(created_by=(created_by or "unknown")[:128], created_at=now,
                     trigger="manual", action=UNINSTALL, allow_restart=allow_restart,
                     status=st.JOB_PENDING, max_attempts=settings.max_attempts,
                     item_timeout_s=settings.item_timeout_s)
    session.add(job)
    session.flush()
    rows = [{"job_id": job.id, "patch_id": patch.id, "endpoint_id": e, "state": st.PENDING,
             "attempts": 0, "installer_type": spec["type"], "uninstall": json.dumps(spec),
             "message": None, "finished_at": None, "updated_at": now} for e, spec in ready.items()]
    rows += [{"job_id": job.id, "patch_id": patch.id, "endpoint_id": e, "state": st.FAILED,
              "attempts": 0, "installer_type": None, "uninstall": None,
              "message": f"not uninstallable here: {why}", "finished_at": now,
              "updated_at": now} for e, why in refused.items()]
    session.execute(insert(ITEMS), rows)
    states = dict(session.execute(select(ITEMS.c.id, ITEMS.c.endpoint_id)
                                  .where(ITEMS.c.job_id == job.id)).tuples().all())
    who = f"rollback created by {job.created_by}"
    events = []
    for item_id, endpoint_id in states.items():
        events.append(event(item_id, st.PENDING, now, who))
        if endpoint_id in refused:
            events.append(event(item_id, st.FAILED, now,
                                f"not uninstallable here: {refused[endpoint_id]}"))
    add_events(session, events)
    return job, {"patch": label, "scope": scope, "to_uninstall": len(ready), "refused":
                 {hosts[e]: why for e, why in refused.items()}, "skipped": skipped}
