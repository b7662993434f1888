"""authentication failures kept in the database, keyed by address and subject

Revision ID: 0005_auth_failures
Revises: 0004_endpoint_identity
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0005_auth_failures"
down_revision = "0004_endpoint_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: rate limits (issue 12 item 17)


def downgrade() -> None:
    pass
