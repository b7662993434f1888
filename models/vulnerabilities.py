"""Vulnerability intelligence: what the feeds (KEV, Mozilla, NVD, MSRC) say about CVEs.

Each feed owns its own rows (the `source` column) and a sync replaces only them, in one
transaction, so a failed or hostile feed never erases what another feed or an earlier
successful run stored. The per-CVE view (best score, exploited, KEV dates) is merged in code
(`applicability.vulnrating.merge_facts`), where the precedence is documented and tested.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, Date, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, UTCDateTime, utcnow


class Vulnerability(Base):
    """One feed's facts about one CVE."""

    __tablename__ = "vulnerabilities"

    cve: Mapped[str] = mapped_column(String(32), primary_key=True)
    source: Mapped[str] = mapped_column(String(16), primary_key=True)  # kev|mozilla|nvd|msrc
    cvss: Mapped[float | None] = mapped_column(Float)
    vector: Mapped[str | None] = mapped_column(String(255))
    score_source: Mapped[str | None] = mapped_column(String(16))  # vendor | nvd | cisa-adp
    vendor_rating: Mapped[str | None] = mapped_column(String(16))
    exploited: Mapped[bool | None] = mapped_column(Boolean)
    publicly_disclosed: Mapped[bool | None] = mapped_column(Boolean)
    kev_date_added: Mapped[dt.date | None] = mapped_column(Date)
    kev_due_date: Mapped[dt.date | None] = mapped_column(Date)
    kev_ransomware: Mapped[bool | None] = mapped_column(Boolean)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class VulnerabilityRange(Base):
    """A version range of one application (CPE vendor:product or Mozilla key) a CVE affects."""

    __tablename__ = "vulnerability_ranges"

    id: Mapped[int] = mapped_column(primary_key=True)
    cve: Mapped[str] = mapped_column(String(32), index=True)
    source: Mapped[str] = mapped_column(String(16), index=True)
    package: Mapped[str] = mapped_column(String(255), index=True)
    start_including: Mapped[str | None] = mapped_column(String(64))
    start_excluding: Mapped[str | None] = mapped_column(String(64))
    end_excluding: Mapped[str | None] = mapped_column(String(64))
    end_including: Mapped[str | None] = mapped_column(String(64))
    exact: Mapped[str | None] = mapped_column(String(64))
    branch: Mapped[str | None] = mapped_column(String(16))
    fixed_in: Mapped[str | None] = mapped_column(String(255))
    # The feed document the range came from (an MFSA key, a CVE id): a document that fails to
    # parse on the next sync keeps its ranges.
    document: Mapped[str | None] = mapped_column(String(64))


class PatchVulnerability(Base):
    """A third-party patch and a CVE it fixes (the version is the first fixed one or later).

    Microsoft patches keep their CVEs in `patch_cves`, from the CVRF document itself."""

    __tablename__ = "patch_vulnerabilities"

    patch_id: Mapped[int] = mapped_column(
        ForeignKey("patches.id", ondelete="CASCADE"), primary_key=True
    )
    cve: Mapped[str] = mapped_column(String(32), primary_key=True, index=True)


class FeedStatus(Base):
    """One vulnerability feed: where it comes from and how its last sync went."""

    __tablename__ = "feed_status"

    name: Mapped[str] = mapped_column(String(16), primary_key=True)  # kev | mozilla | nvd
    source: Mapped[str | None] = mapped_column(String(1024))  # URL, folder, file; NULL = off
    status: Mapped[str] = mapped_column(String(16), default="Never")
    status_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    records: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[str | None] = mapped_column(Text)
    # NVD incremental fetch: the lastModified high-water mark of the last full success.
    last_modified: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    flow_run_id: Mapped[str | None] = mapped_column(String(64))


class CpeMapping(Base):
    """An administrator's winget PackageIdentifier -> CPE vendor:product (overrides the
    built-in defaults in patchflow.catalog.vulnfeeds)."""

    __tablename__ = "cpe_mappings"

    package_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    cpe: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
