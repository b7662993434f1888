"""authentication failures kept in the database, keyed by address and subject

Revision ID: 0005_auth_failures
Revises: 0004_endpoint_identity
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import models.base

revision = "0005_auth_failures"
down_revision = "0004_endpoint_identity"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rate limits: shared by every server worker, keyed by (address, subject).
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scope", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("failed_at", models.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_failures")),
    )
    with op.batch_alter_table("auth_failures", schema=None) as batch_op:
        batch_op.create_index("ix_auth_failures_scope_address_subject",
                              ["scope", "address", "subject"], unique=False)
        batch_op.create_index("ix_auth_failures_failed_at", ["failed_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("auth_failures", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_failures_failed_at")
        batch_op.drop_index("ix_auth_failures_scope_address_subject")
    op.drop_table("auth_failures")
