"""endpoint identity: re-enrolment pending approval, reported host name

Revision ID: 0004_endpoint_identity
Revises: 0003_install_results
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

revision = "0004_endpoint_identity"
down_revision = "0003_install_results"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: enrolment identity (issue 12 items 2, 25)


def downgrade() -> None:
    pass
