"""What patchflow did and found: scans, missing patches, selections and install jobs."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.mysql import LONGTEXT
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class ScanProfile(Base):
    """One (patch server, touched catalog keys) combination results were computed from; many
    endpoints share one (applicability.basis.Profile)."""

    __tablename__ = "scan_profiles"

    id: Mapped[int] = mapped_column(primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    server_id: Mapped[int | None] = mapped_column(Integer)
    keys: Mapped[str] = mapped_column(Text)  # JSON list


class CatalogState(Base):
    """A catalog's per-key digests (applicability.basis.CatalogDigests), one row per distinct
    catalog a scan ran against."""

    __tablename__ = "catalog_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    digests: Mapped[str] = mapped_column(Text().with_variant(LONGTEXT(), "mysql"))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Scan(Base):
    __tablename__ = "scans"

    id: Mapped[int] = mapped_column(primary_key=True)
    trigger: Mapped[str] = mapped_column(String(16))  # manual | scheduled | inventory
    scope: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="running")
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    endpoints_total: Mapped[int] = mapped_column(Integer, default=0)
    endpoints_done: Mapped[int] = mapped_column(Integer, default=0)
    endpoints_missing: Mapped[int] = mapped_column(Integer, default=0)
    endpoints_up_to_date: Mapped[int] = mapped_column(Integer, default=0)
    endpoints_failed: Mapped[int] = mapped_column(Integer, default=0)
    missing_pairs: Mapped[int] = mapped_column(Integer, default=0)
    # Of endpoints_done, those an incremental scan kept (nothing they depend on changed).
    endpoints_unchanged: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    message: Mapped[str | None] = mapped_column(Text)


class MissingPatch(Base):
    __tablename__ = "missing_patches"

    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    patch_id: Mapped[int] = mapped_column(
        ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    product: Mapped[str | None] = mapped_column(String(255))
    installed_version: Mapped[str | None] = mapped_column(String(128))
    available_version: Mapped[str | None] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text)
    detected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    scan_id: Mapped[int | None] = mapped_column(Integer)


class InstallSelection(Base):
    """The admin's pending (patch, endpoint) picks; they persist until started or refreshed."""

    __tablename__ = "install_selections"

    patch_id: Mapped[int] = mapped_column(
        ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True
    )
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), primary_key=True
    )
    selected_by: Mapped[str | None] = mapped_column(String(128))
    selected_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class InstallJob(Base):
    __tablename__ = "install_jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    trigger: Mapped[str] = mapped_column(String(16), default="manual")
    # "install", or "uninstall" for a rollback (`patchflow install rollback`): its items carry
    # the uninstall spec the agent runs instead of an installer.
    action: Mapped[str] = mapped_column(String(16), default="install", server_default="install")
    allow_restart: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    max_attempts: Mapped[int] = mapped_column(Integer, default=2)
    item_timeout_s: Mapped[int] = mapped_column(Integer, default=3600)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    message: Mapped[str | None] = mapped_column(Text)
    # The one flow driving the job ("host:pid:token") until lease_expires_at; the driver
    # renews it while it runs (patchflow/install/lease.py).
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class InstallJobItem(Base):
    __tablename__ = "install_job_items"
    __table_args__ = (UniqueConstraint("job_id", "endpoint_id", "patch_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("install_jobs.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[int] = mapped_column(
        ForeignKey("endpoints.id", ondelete="CASCADE"), index=True
    )
    patch_id: Mapped[int] = mapped_column(ForeignKey("patches.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # 64-bit: Windows reports crashes as unsigned NTSTATUS codes (0xC0000005 = 3221225477).
    exit_code: Mapped[int | None] = mapped_column(BigInteger)
    message: Mapped[str | None] = mapped_column(Text)
    # The catalog installer chosen for this item; (patch, SHA-256) is not unique when a
    # manifest lists one file under two architectures. NULL once the catalog row is replaced.
    installer_id: Mapped[int | None] = mapped_column(
        ForeignKey("patch_installers.id", ondelete="SET NULL")
    )
    download_url: Mapped[str | None] = mapped_column(Text)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    installer_type: Mapped[str | None] = mapped_column(String(16))
    silent_switches: Mapped[str | None] = mapped_column(String(512))
    # A rollback's item: the uninstall spec as JSON (agent/uninstall.py), built when the job
    # was created from the endpoint's reported inventory.
    uninstall: Mapped[str | None] = mapped_column(Text)
    result_id: Mapped[str | None] = mapped_column(String(64))
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # When the maintenance window the item was dispatched in closes: the agent is told it may
    # restart only before then. NULL: the endpoint's policy has no windows.
    restart_until: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class InstallItemEvent(Base):
    """Every state change of an item, timestamped: the audit trail of what ran where."""

    __tablename__ = "install_item_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(
        ForeignKey("install_job_items.id", ondelete="CASCADE"), index=True
    )
    state: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    exit_code: Mapped[int | None] = mapped_column(BigInteger)
    message: Mapped[str | None] = mapped_column(Text)
