"""install jobs: one driver at a time through a lease

Revision ID: 0007_job_lease
Revises: 0006_admin_sessions
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0007_job_lease"
down_revision = "0006_admin_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: job lease (issue 12 item 13)


def downgrade() -> None:
    pass
