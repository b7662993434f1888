"""The product's fixed vocabularies; their values appear exactly so in UI, CSV and JSON."""

from __future__ import annotations

from enum import StrEnum


class Severity(StrEnum):
    CRITICAL = "Critical"
    IMPORTANT = "Important"
    MODERATE = "Moderate"
    LOW = "Low"
    UNSPECIFIED = "Unspecified"


class Category(StrEnum):
    SECURITY_UPDATES = "Security Updates"
    UPDATE_ROLLUPS = "Update Rollups"
    APPLICATIONS = "Applications"
    SERVICE_PACKS = "Service Packs"
    FEATURE_PACKS = "Feature Packs"
    UPDATES = "Updates"
    DEFINITION_UPDATES = "Definition Updates"
    CRITICAL_UPDATES = "Critical Updates"
    TOOLS = "Tools"
    DRIVERS = "Drivers"
    UPGRADES = "Upgrades"


class RestartRequired(StrEnum):
    REQUIRED = "Required"
    NOT_REQUIRED = "Not Required"
    MAY_REQUIRE = "May Require"


class EulaStatus(StrEnum):
    ACCEPTED = "Accepted"
    NOT_ACCEPTED = "Not Accepted"


class ScanState(StrEnum):
    NOT_SCANNED = "Not Scanned"
    MISSING_PATCHES = "Missing Patches"
    UP_TO_DATE = "Up-to-Date"
    SCANNING = "Scanning"
    SCAN_FAILED = "Scan Failed"


class SyncStatus(StrEnum):
    NEVER = "Never"
    RUNNING = "Running"
    SUCCESSFUL = "Successful"
    FAILED = "Failed"
    STOPPED = "Stopped"


class ItemState(StrEnum):
    PENDING = "pending"
    DISPATCHED = "dispatched"
    DOWNLOADING = "downloading"
    INSTALLING = "installing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REBOOT_PENDING = "reboot pending"
    CANCELLED = "cancelled"


FINAL_ITEM_STATES = frozenset(
    {ItemState.SUCCEEDED, ItemState.FAILED, ItemState.REBOOT_PENDING, ItemState.CANCELLED}
)
