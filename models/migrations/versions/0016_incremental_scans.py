"""incremental scans: what each endpoint's last result was computed from

Revision ID: 0016_incremental_scans
Revises: 0015_manual_gate
Create Date: 2026-12-05

`scan_profiles` interns (patch server, touched catalog keys) combinations, `catalog_states` the
per-key digests of a catalog (applicability.basis). Endpoints get the inventory's revision
(`inventory_rev`, counted up when its content is stored, not by an unchanged upload) and what
their last scan read: `scanned_inventory_rev`, `scan_profile_id`, `scan_catalog_id`; scans
count the endpoints they kept (`endpoints_unchanged`). NULL in any of them means "scan in
full", so existing results are recomputed once by the first scan after the upgrade.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGTEXT

from models.base import UTCDateTime

revision = "0016_incremental_scans"
down_revision = "0015_manual_gate"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scan_profiles",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("server_id", sa.Integer()),
        sa.Column("keys", sa.Text(), nullable=False),
    )
    op.create_table(
        "catalog_states",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False, unique=True),
        sa.Column("digests", sa.Text().with_variant(LONGTEXT(), "mysql"), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.add_column("endpoints", sa.Column("inventory_rev", sa.Integer(), nullable=False,
                                         server_default="0"))
    for name in ("scanned_inventory_rev", "scan_profile_id", "scan_catalog_id"):
        op.add_column("endpoints", sa.Column(name, sa.Integer()))
    op.add_column("scans", sa.Column("endpoints_unchanged", sa.Integer(), nullable=False,
                                     server_default="0"))


def downgrade() -> None:
    op.drop_column("scans", "endpoints_unchanged")
    for name in ("scan_catalog_id", "scan_profile_id", "scanned_inventory_rev",
                 "inventory_rev"):
        op.drop_column("endpoints", name)
    op.drop_table("catalog_states")
    op.drop_table("scan_profiles")
