"""administrator sessions end on password change and removal

Revision ID: 0006_admin_sessions
Revises: 0005_auth_failures
Create Date: 2026-12-04

Every administrator gets a session epoch, a random value signed into each console cookie and
replaced when the password changes: a cookie whose epoch no longer matches is no session.
Existing administrators get a fresh epoch each, which logs out the sessions issued before the
upgrade (their cookies carry no epoch).
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0006_admin_sessions"
down_revision = "0005_auth_failures"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("admin_users") as batch:
        batch.add_column(sa.Column("session_epoch", sa.String(64), nullable=False,
                                   server_default=""))
    users = sa.table("admin_users", sa.column("id", sa.Integer),
                     sa.column("session_epoch", sa.String))
    bind = op.get_bind()
    for (user_id,) in bind.execute(sa.select(users.c.id)).all():
        bind.execute(users.update().where(users.c.id == user_id)
                     .values(session_epoch=secrets.token_hex(16)))


def downgrade() -> None:
    with op.batch_alter_table("admin_users") as batch:
        batch.drop_column("session_epoch")
