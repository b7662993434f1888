"""inventory hash: the digest of each endpoint's stored inventory (unchanged uploads)

Revision ID: 0012_inventory_hash
Revises: 0011_patch_cycle
Create Date: 2026-12-04

A plain ADD COLUMN, not a batch table copy: on SQLite, copying `endpoints` with foreign keys
on would cascade deletes into every table that references it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_inventory_hash"
down_revision = "0011_patch_cycle"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("endpoints", sa.Column("inventory_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops a plain column in place (no table copy either).
    op.drop_column("endpoints", "inventory_sha256")
