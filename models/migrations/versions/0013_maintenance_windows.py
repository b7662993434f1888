"""maintenance windows: per policy, and the restart deadline of each dispatched install item

Revision ID: 0013_maintenance_windows
Revises: 0012_inventory_hash
Create Date: 2026-12-04

`install_job_items.restart_until` is a plain ADD COLUMN, not a batch table copy (see 0012).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.base import UTCDateTime

revision = "0013_maintenance_windows"
down_revision = "0012_inventory_hash"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("policy_id", sa.Integer(),
                  sa.ForeignKey("policies.id", name="fk_maintenance_windows_policy_id_policies",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("days", sa.String(32), nullable=False),
        sa.Column("start_time", sa.String(5), nullable=False),
        sa.Column("end_time", sa.String(5), nullable=False),
        sa.Column("time_zone", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_maintenance_windows_policy_id", "maintenance_windows", ["policy_id"])
    op.add_column("install_job_items", sa.Column("restart_until", UTCDateTime(), nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops a plain column in place (no table copy either).
    op.drop_column("install_job_items", "restart_until")
    # The table takes its index with it (MariaDB refuses to drop an index a foreign key uses).
    op.drop_table("maintenance_windows")
