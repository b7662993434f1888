"""The patch database: typed SQLAlchemy 2.x models, engine/session setup, Alembic migrations."""

from models.access import (
    AdminUser,
    ApiToken,
    AuthFailure,
    EnrollmentToken,
    ReportRun,
    Setting,
)
from models.audit import AuditEvent
from models.base import Base
from models.catalog import (
    ContentObject,
    EulaAcceptance,
    Patch,
    PatchCve,
    PatchInstaller,
    PatchProduct,
    PatchServer,
    Product,
    ServerPatch,
    Supersedence,
    SyncDocument,
)
from models.cycle import (
    ApprovalRule,
    CycleRun,
    MaintenanceWindow,
    PatchApproval,
    PatchDecline,
    PolicyRing,
)
from models.fleet import Endpoint, Group, InstalledProgram, InstalledUpdate, Policy
from models.operations import (
    InstallItemEvent,
    InstallJob,
    InstallJobItem,
    InstallSelection,
    MissingPatch,
    Scan,
)
from models.vulnerabilities import (
    CpeMapping,
    FeedStatus,
    PatchVulnerability,
    Vulnerability,
    VulnerabilityRange,
)

__all__ = [
    "AdminUser",
    "ApiToken",
    "ApprovalRule",
    "AuditEvent",
    "AuthFailure",
    "Base",
    "ContentObject",
    "CpeMapping",
    "CycleRun",
    "Endpoint",
    "EnrollmentToken",
    "EulaAcceptance",
    "FeedStatus",
    "Group",
    "InstallItemEvent",
    "InstallJob",
    "InstallJobItem",
    "InstallSelection",
    "InstalledProgram",
    "InstalledUpdate",
    "MaintenanceWindow",
    "MissingPatch",
    "Patch",
    "PatchApproval",
    "PatchCve",
    "PatchDecline",
    "PatchInstaller",
    "PatchProduct",
    "PatchServer",
    "PatchVulnerability",
    "Policy",
    "PolicyRing",
    "Product",
    "ReportRun",
    "Scan",
    "ServerPatch",
    "Setting",
    "Supersedence",
    "SyncDocument",
    "Vulnerability",
    "VulnerabilityRange",
]
