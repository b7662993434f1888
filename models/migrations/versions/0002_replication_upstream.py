"""replication upstream: which patch server of another patchflow instance, its token, its pinned
certificate fingerprint

Revision ID: 0002_replication_upstream
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_replication_upstream"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Generated with --autogenerate against a database at 0001, then reviewed: three nullable
    # columns, no existing column touched.
    with op.batch_alter_table("patch_servers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upstream_server", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("upstream_token_enc", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("upstream_fingerprint", sa.String(length=128), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("patch_servers", schema=None) as batch_op:
        batch_op.drop_column("upstream_fingerprint")
        batch_op.drop_column("upstream_token_enc")
        batch_op.drop_column("upstream_server")
