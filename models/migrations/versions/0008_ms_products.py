"""Microsoft software beyond the OS: inventory details the mapping needs

Revision ID: 0008_ms_products
Revises: 0007_job_lease
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_ms_products"
down_revision = "0007_job_lease"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The inventory's Microsoft facts (.NET Framework release, Click-to-Run, SQL Server
    # instances, Exchange/SharePoint builds) as a JSON list; NULL when none were reported.
    with op.batch_alter_table("endpoints") as batch:
        batch.add_column(sa.Column("ms_facts", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("endpoints") as batch:
        batch.drop_column("ms_facts")
