"""rollback: install jobs that uninstall (`install_jobs.action`) and their items' uninstall spec

Revision ID: 0014_rollback
Revises: 0013_maintenance_windows
Create Date: 2026-12-04

Plain ADD COLUMNs (no batch table copy: on SQLite that would cascade deletes from the tables
referencing these). Existing jobs are installs, so `action` defaults to "install".
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_rollback"
down_revision = "0013_maintenance_windows"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("install_jobs", sa.Column("action", sa.String(16), nullable=False,
                                            server_default="install"))
    op.add_column("install_job_items", sa.Column("uninstall", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("install_job_items", "uninstall")
    op.drop_column("install_jobs", "action")
