"""The patch database: typed SQLAlchemy 2.x models, engine/session setup, Alembic migrations."""

from models.access import AdminUser, ApiToken, EnrollmentToken, ReportRun, Setting
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
from models.fleet import Endpoint, Group, InstalledProgram, InstalledUpdate, Policy
from models.operations import (
    InstallItemEvent,
    InstallJob,
    InstallJobItem,
    InstallSelection,
    MissingPatch,
    Scan,
)

__all__ = [
    "AdminUser",
    "ApiToken",
    "Base",
    "ContentObject",
    "Endpoint",
    "EnrollmentToken",
    "EulaAcceptance",
    "Group",
    "InstallItemEvent",
    "InstallJob",
    "InstallJobItem",
    "InstallSelection",
    "InstalledProgram",
    "InstalledUpdate",
    "MissingPatch",
    "Patch",
    "PatchCve",
    "PatchInstaller",
    "PatchProduct",
    "PatchServer",
    "Policy",
    "Product",
    "ReportRun",
    "Scan",
    "ServerPatch",
    "Setting",
    "Supersedence",
    "SyncDocument",
]
