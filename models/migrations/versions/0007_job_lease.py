"""install jobs: one driver at a time through a lease

Revision ID: 0007_job_lease
Revises: 0006_admin_sessions
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_job_lease"
down_revision = "0006_admin_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("install_jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("install_jobs") as batch:
        batch.drop_column("lease_expires_at")
        batch.drop_column("lease_owner")
