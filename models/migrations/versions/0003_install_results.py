"""install results: 64-bit exit codes, the installer chosen per item

Windows reports an installer that crashed with its NTSTATUS as an unsigned 32-bit exit code
(0xC0000005 = 3221225477), beyond a signed INT: MariaDB refused it and the agent's result was
never stored. Exit codes become BIGINT. Each item also keeps the id of the catalog installer
chosen for it: a manifest can list one file under two architectures, so (patch, SHA-256) does
not name one installer.

Revision ID: 0003_install_results
Revises: 0002_replication_upstream
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_install_results"
down_revision = "0002_replication_upstream"
branch_labels = None
depends_on = None

FK_NAME = "fk_install_job_items_installer_id_patch_installers"
EXIT_CODE_TABLES = ("install_job_items", "install_item_events")


def _has_column(table: str, column: str) -> bool:
    return column in {c["name"] for c in sa.inspect(op.get_bind()).get_columns(table)}


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's INTEGER already holds 64 bits, so no type change is needed. A batch copy of
        # install_job_items must be avoided: dropping the old copy with foreign keys on (they
        # cannot be switched off inside the migration's transaction) would cascade into the
        # event trail. ADD COLUMN with an inline, named reference needs no copy.
        if not _has_column("install_job_items", "installer_id"):
            op.execute(
                "ALTER TABLE install_job_items ADD COLUMN installer_id INTEGER "
                f"CONSTRAINT {FK_NAME} REFERENCES patch_installers (id) ON DELETE SET NULL"
            )
        return
    for table in EXIT_CODE_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("exit_code", existing_type=sa.Integer(),
                                  type_=sa.BigInteger(), existing_nullable=True)
    with op.batch_alter_table("install_job_items", schema=None) as batch_op:
        batch_op.add_column(sa.Column("installer_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(FK_NAME, "patch_installers", ["installer_id"], ["id"],
                                    ondelete="SET NULL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # Dropping the column would need the table copy described above; the nullable column
        # is left in place (older code ignores it) and upgrade() adds it only when missing.
        return
    with op.batch_alter_table("install_job_items", schema=None) as batch_op:
        batch_op.drop_constraint(FK_NAME, type_="foreignkey")
        batch_op.drop_column("installer_id")
    # Fails (strict mode) rather than truncating when an exit code beyond INT is stored.
    for table in EXIT_CODE_TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("exit_code", existing_type=sa.BigInteger(),
                                  type_=sa.Integer(), existing_nullable=True)
