"""Endpoints, what they report (inventory), the groups they sit in and the policies they get."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, LargeBinary, String, Text, false
from sqlalchemy.dialects.mysql import LONGBLOB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class Policy(Base):
    __tablename__ = "policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    patch_server_id: Mapped[int | None] = mapped_column(
        ForeignKey("patch_servers.id", ondelete="SET NULL")
    )
    use_patch_server: Mapped[bool] = mapped_column(Boolean, default=True)
    roaming_microsoft: Mapped[bool] = mapped_column(Boolean, default=False)
    scan_weekday: Mapped[str | None] = mapped_column(String(16))
    scan_at: Mapped[str | None] = mapped_column(String(5))
    scan_every_weeks: Mapped[int] = mapped_column(Integer, default=1)
    scan_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    run_if_missed: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_install: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_restart: Mapped[bool] = mapped_column(Boolean, default=False)
    # The schedule above runs the patch cycle (which scans) instead of a bare scan.
    cycle_scheduled: Mapped[bool] = mapped_column(Boolean, default=False,
                                                  server_default=false())
    last_scheduled_scan_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Group(Base):
    __tablename__ = "groups"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="RESTRICT"))
    policy_id: Mapped[int | None] = mapped_column(ForeignKey("policies.id", ondelete="SET NULL"))


class Endpoint(Base):
    __tablename__ = "endpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), unique=True)
    domain: Mapped[str | None] = mapped_column(String(255))
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="SET NULL"), index=True
    )
    agent_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str | None] = mapped_column(String(128))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    enrolled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    os_name: Mapped[str | None] = mapped_column(String(255))
    os_display_version: Mapped[str | None] = mapped_column(String(16))
    os_build: Mapped[int | None] = mapped_column(Integer)
    os_ubr: Mapped[int | None] = mapped_column(Integer)
    os_arch: Mapped[str | None] = mapped_column(String(8))
    os_language: Mapped[str | None] = mapped_column(String(16))
    hotpatch: Mapped[bool] = mapped_column(Boolean, default=False)
    installation_type: Mapped[str | None] = mapped_column(String(32))
    # The inventory's `ms_facts` as JSON (NULL: none reported): Microsoft software beyond the
    # Uninstall key, read by the scan (applicability.msproducts).
    ms_facts: Mapped[str | None] = mapped_column(Text)
    pending_reboot: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_ip: Mapped[str | None] = mapped_column(String(64))
    roaming: Mapped[bool] = mapped_column(Boolean, default=False)
    inventory_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    collected_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    scan_state: Mapped[str] = mapped_column(String(16), default="Not Scanned", index=True)
    scan_state_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    scan_message: Mapped[str | None] = mapped_column(Text)
    last_scan_id: Mapped[int | None] = mapped_column(Integer)
    # A re-enrolment of an existing host name waiting for an administrator: this row holds the
    # new agent's credentials under an internal name (never a valid host name) and is neither
    # scanned, counted nor offered installs until approved. Unique: one pending per endpoint.
    replaces_endpoint_id: Mapped[int | None] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), unique=True, index=True
    )
    # The host name the agent last reported; it never renames the endpoint.
    reported_hostname: Mapped[str | None] = mapped_column(String(255))
    # SHA-256 of the stored inventory in the agent's canonical form (agent.transport
    # .inventory_digest); an upload naming it is answered "unchanged" without parsing or
    # writing. NULL: unknown (a file import, or stored before migration 0012).
    inventory_sha256: Mapped[str | None] = mapped_column(String(64))
    # What the last result was computed from, for incremental scans (applicability.basis):
    # the inventory's revision (counted up whenever its content is stored, never by an
    # unchanged upload), the revision the scan read, the interned (server, touched keys)
    # profile and the catalog's per-key digests. NULL: scan it in full.
    inventory_rev: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    scanned_inventory_rev: Mapped[int | None] = mapped_column(Integer)
    scan_profile_id: Mapped[int | None] = mapped_column(Integer)
    scan_catalog_id: Mapped[int | None] = mapped_column(Integer)


class InstalledProgram(Base):
    __tablename__ = "installed_programs"
    # Leads with endpoint_id (an endpoint's rows, the foreign key); name finds the rows an
    # inventory sent as changes removes (migration 0018).
    __table_args__ = (Index("ix_installed_programs_endpoint_name", "endpoint_id", "name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("endpoints.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(512))
    version: Mapped[str | None] = mapped_column(String(128))
    publisher: Mapped[str | None] = mapped_column(String(255))
    product_code: Mapped[str | None] = mapped_column(String(128))
    upgrade_code: Mapped[str | None] = mapped_column(String(64))
    arch: Mapped[str | None] = mapped_column(String(8))
    scope: Mapped[str | None] = mapped_column(String(16))
    install_date: Mapped[dt.date | None] = mapped_column(Date)


class InventoryPack(Base):
    """An endpoint's installed programs as a scan reads them: one compressed JSON value written
    with the rows (patchflow.fleet.programs_pack). No row: the scan reads installed_programs.

    A table of its own, not a column of `endpoints`: MariaDB reads a row's long values on
    every UPDATE of it, and marking 30,000 endpoints "Scanning" took 3.8 s with the packs in
    the row against a fraction of that without."""

    __tablename__ = "inventory_packs"

    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    programs: Mapped[bytes] = mapped_column(LargeBinary().with_variant(LONGBLOB(), "mysql"))


class InstalledUpdate(Base):
    __tablename__ = "installed_updates"

    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    kb: Mapped[str] = mapped_column(String(16), primary_key=True)
    installed_on: Mapped[dt.date | None] = mapped_column(Date)
