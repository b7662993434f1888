"""manual gate: a ring's gate kind, and a policy's schedule running the patch cycle

Revision ID: 0015_manual_gate
Revises: 0014_rollback
Create Date: 2026-12-04

`policy_rings.gate` is "rate" (the ring before must reach the ring's success rate) or "manual"
(the cycle pauses before the ring until an administrator resumes it). `policies.cycle_scheduled`
makes the policy's schedule run the patch cycle instead of a bare scan. Plain ADD COLUMNs with
server defaults: existing rows keep today's behaviour, and no table copy on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_manual_gate"
down_revision = "0014_rollback"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("policy_rings", sa.Column("gate", sa.String(16), nullable=False,
                                            server_default="rate"))
    op.add_column("policies", sa.Column("cycle_scheduled", sa.Boolean(), nullable=False,
                                        server_default=sa.false()))


def downgrade() -> None:
    op.drop_column("policies", "cycle_scheduled")
    op.drop_column("policy_rings", "gate")
