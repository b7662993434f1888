"""Microsoft software beyond the OS: inventory details the mapping needs

Revision ID: 0008_ms_products
Revises: 0007_job_lease
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0008_ms_products"
down_revision = "0007_job_lease"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: Microsoft products (issue 20)


def downgrade() -> None:
    pass
