"""patch cycle: approvals, declines, automatic approval rules, cycle runs

Revision ID: 0011_patch_cycle
Revises: 0010_audit_log
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from models.base import UTCDateTime

revision = "0011_patch_cycle"
down_revision = "0010_audit_log"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "patch_approvals",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("patch_id", sa.Integer(),
                  sa.ForeignKey("patches.id", name="fk_patch_approvals_patch_id_patches",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("group_id", sa.Integer(),
                  sa.ForeignKey("groups.id", name="fk_patch_approvals_group_id_groups",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("deadline", sa.Date(), nullable=True),
        sa.Column("approved_by", sa.String(128), nullable=False),
        sa.Column("approved_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.UniqueConstraint("patch_id", "group_id",
                            name="uq_patch_approvals_patch_id_group_id"),
    )
    op.create_index("ix_patch_approvals_patch_id", "patch_approvals", ["patch_id"])
    op.create_index("ix_patch_approvals_group_id", "patch_approvals", ["group_id"])
    op.create_table(
        "patch_declines",
        sa.Column("patch_id", sa.Integer(),
                  sa.ForeignKey("patches.id", name="fk_patch_declines_patch_id_patches",
                                ondelete="CASCADE"), primary_key=True),
        sa.Column("declined_by", sa.String(128), nullable=False),
        sa.Column("declined_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_table(
        "approval_rules",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("group_ids", sa.Text(), nullable=False),
        sa.Column("severities", sa.Text(), nullable=True),
        sa.Column("categories", sa.Text(), nullable=True),
        sa.Column("products", sa.Text(), nullable=True),
        sa.Column("exploited", sa.Boolean(), nullable=False),
        sa.Column("delay_days", sa.Integer(), nullable=False),
        sa.Column("deadline_days", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("name", name="uq_approval_rules_name"),
    )
    op.create_table(
        "cycle_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("policy_id", sa.Integer(),
                  sa.ForeignKey("policies.id", name="fk_cycle_runs_policy_id_policies",
                                ondelete="SET NULL"), nullable=True),
        sa.Column("policy_name", sa.String(128), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("started_by", sa.String(128), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("install_job_id", sa.Integer(), nullable=True),
        sa.Column("steps", sa.Text(), nullable=True),
        sa.Column("plan", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
    )
    op.create_index("ix_cycle_runs_policy_id", "cycle_runs", ["policy_id"])
    op.create_table(
        "policy_rings",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("policy_id", sa.Integer(),
                  sa.ForeignKey("policies.id", name="fk_policy_rings_policy_id_policies",
                                ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("group_ids", sa.Text(), nullable=False),
        sa.Column("delay_minutes", sa.Integer(), nullable=False),
        sa.Column("min_success_rate", sa.Integer(), nullable=False),
        sa.UniqueConstraint("policy_id", "name", name="uq_policy_rings_policy_id_name"),
    )
    op.create_index("ix_policy_rings_policy_id", "policy_rings", ["policy_id"])


def downgrade() -> None:
    op.drop_index("ix_policy_rings_policy_id", table_name="policy_rings")
    op.drop_table("policy_rings")
    op.drop_index("ix_cycle_runs_policy_id", table_name="cycle_runs")
    op.drop_table("cycle_runs")
    op.drop_table("approval_rules")
    op.drop_table("patch_declines")
    op.drop_index("ix_patch_approvals_group_id", table_name="patch_approvals")
    op.drop_index("ix_patch_approvals_patch_id", table_name="patch_approvals")
    op.drop_table("patch_approvals")
