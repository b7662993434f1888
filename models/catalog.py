"""Patch servers and the catalog they hold: patches, their products, CVEs, installers."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, UTCDateTime, utcnow


class PatchServer(Base):
    __tablename__ = "patch_servers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer, default=6201)
    upstream: Mapped[str] = mapped_column(String(255), default="microsoft")
    wsus_url: Mapped[str | None] = mapped_column(String(1024))
    msrc_source: Mapped[str | None] = mapped_column(String(1024))
    winget_source: Mapped[str | None] = mapped_column(String(1024))
    winget_packages: Mapped[str | None] = mapped_column(Text)  # JSON list of PackageIdentifiers
    proxy_url: Mapped[str | None] = mapped_column(String(1024))
    proxy_user: Mapped[str | None] = mapped_column(String(255))
    proxy_password_enc: Mapped[str | None] = mapped_column(Text)
    # Filters: JSON lists; NULL means "All".
    filter_categories: Mapped[str | None] = mapped_column(Text)
    filter_languages: Mapped[str | None] = mapped_column(Text)
    filter_products: Mapped[str | None] = mapped_column(Text)
    schedule_frequency: Mapped[str | None] = mapped_column(String(16))
    schedule_weekday: Mapped[str | None] = mapped_column(String(16))
    schedule_at: Mapped[str | None] = mapped_column(String(5))
    schedule_week_of_month: Mapped[int | None] = mapped_column(Integer)
    sync_status: Mapped[str] = mapped_column(String(16), default="Never")
    sync_status_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sync_message: Mapped[str | None] = mapped_column(Text)
    sync_started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sync_finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    sync_flow_run_id: Mapped[str | None] = mapped_column(String(64))
    sync_stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    replication_revision: Mapped[int] = mapped_column(Integer, default=0)
    # Another patchflow instance as upstream (`upstream = https://host:port`): which of its
    # patch servers to replicate, the replication token (encrypted) and the pinned SHA-256
    # fingerprint of its certificate.
    upstream_server: Mapped[str | None] = mapped_column(String(64))
    upstream_token_enc: Mapped[str | None] = mapped_column(Text)
    upstream_fingerprint: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Product(Base):
    """Every product name seen in a source, for the filters dialog."""

    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    source: Mapped[str] = mapped_column(String(16))


class Patch(Base):
    __tablename__ = "patches"

    id: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    ukey: Mapped[str] = mapped_column(String(255), unique=True)
    kb: Mapped[str | None] = mapped_column(String(16), index=True)
    package_id: Mapped[str | None] = mapped_column(String(255), index=True)
    version: Mapped[str | None] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(512))
    vendor: Mapped[str] = mapped_column(String(255))
    category: Mapped[str] = mapped_column(String(32))
    severity: Mapped[str] = mapped_column(String(16), default="Unspecified")
    restart_required: Mapped[str] = mapped_column(String(16), default="May Require")
    eula_required: Mapped[bool] = mapped_column(Boolean, default=False)
    eula_url: Mapped[str | None] = mapped_column(String(1024))
    info_url: Mapped[str | None] = mapped_column(String(1024))
    description: Mapped[str | None] = mapped_column(Text)
    languages: Mapped[str | None] = mapped_column(Text)  # JSON list, NULL = language neutral
    release_date: Mapped[dt.date | None] = mapped_column(Date)
    superseded_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("patches.id", ondelete="SET NULL")
    )
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    products: Mapped[list[PatchProduct]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )
    cves: Mapped[list[PatchCve]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    installers: Mapped[list[PatchInstaller]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True
    )


class PatchProduct(Base):
    __tablename__ = "patch_products"

    id: Mapped[int] = mapped_column(primary_key=True)
    patch_id: Mapped[int] = mapped_column(ForeignKey("patches.id", ondelete="CASCADE"), index=True)
    product: Mapped[str] = mapped_column(String(255), index=True)
    fixed_build: Mapped[str | None] = mapped_column(String(255))
    supersedes_kb: Mapped[str | None] = mapped_column(String(16))
    subtype: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16), default="Unspecified")
    restart_required: Mapped[str | None] = mapped_column(String(16))


class PatchCve(Base):
    __tablename__ = "patch_cves"

    patch_id: Mapped[int] = mapped_column(
        ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True
    )
    cve: Mapped[str] = mapped_column(String(32), primary_key=True)


class PatchInstaller(Base):
    __tablename__ = "patch_installers"

    id: Mapped[int] = mapped_column(primary_key=True)
    patch_id: Mapped[int] = mapped_column(ForeignKey("patches.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    arch: Mapped[str] = mapped_column(String(8))
    scope: Mapped[str | None] = mapped_column(String(16))
    locale: Mapped[str | None] = mapped_column(String(16))
    silent_switches: Mapped[str | None] = mapped_column(String(512))
    product_code: Mapped[str | None] = mapped_column(String(128))
    upgrade_code: Mapped[str | None] = mapped_column(String(64))
    apps_and_features: Mapped[str | None] = mapped_column(Text)  # JSON list of dicts


class Supersedence(Base):
    """Patch-level supersedence by catalog key, kept even when the superseded patch is absent."""

    __tablename__ = "supersedence"

    patch_id: Mapped[int] = mapped_column(
        ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True
    )
    supersedes_key: Mapped[str] = mapped_column(String(255), primary_key=True)


class ServerPatch(Base):
    """Which patches a patch server offers; `revision` orders changes for replication."""

    __tablename__ = "server_patches"
    __table_args__ = (Index("ix_server_patches_server_revision", "server_id", "revision"),)

    server_id: Mapped[int] = mapped_column(
        ForeignKey("patch_servers.id", ondelete="CASCADE"), primary_key=True
    )
    patch_id: Mapped[int] = mapped_column(
        ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    revision: Mapped[int] = mapped_column(Integer)


class SyncDocument(Base):
    """One upstream document per server, so unchanged documents are skipped on the next sync."""

    __tablename__ = "sync_documents"
    __table_args__ = (UniqueConstraint("server_id", "source", "doc_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    server_id: Mapped[int] = mapped_column(ForeignKey("patch_servers.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(String(16))
    doc_key: Mapped[str] = mapped_column(String(255))
    content_hash: Mapped[str | None] = mapped_column(String(64))
    release_date: Mapped[dt.date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(16))  # ok | failed
    message: Mapped[str | None] = mapped_column(Text)
    patches: Mapped[int] = mapped_column(Integer, default=0)
    synced_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class EulaAcceptance(Base):
    __tablename__ = "eula_acceptances"

    patch_id: Mapped[int] = mapped_column(
        ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True
    )
    accepted_by: Mapped[str] = mapped_column(String(128))
    accepted_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ContentObject(Base):
    """A file in the content store, addressed by its SHA-256."""

    __tablename__ = "content_objects"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    source_url: Mapped[str | None] = mapped_column(Text)
    stored_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
