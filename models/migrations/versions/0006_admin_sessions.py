"""administrator sessions end on password change and removal

Revision ID: 0006_admin_sessions
Revises: 0005_auth_failures
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0006_admin_sessions"
down_revision = "0005_auth_failures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: console accounts (issue 12 items 7, 18)


def downgrade() -> None:
    pass
