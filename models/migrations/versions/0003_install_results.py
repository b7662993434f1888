"""install results: 64-bit exit codes, the installer chosen per item

Revision ID: 0003_install_results
Revises: 0002_replication_upstream
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0003_install_results"
down_revision = "0002_replication_upstream"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: agent results (issue 12 items 3, 20)


def downgrade() -> None:
    pass
