"""inventory packs: each endpoint's installed programs as a scan reads them, in one value

Revision ID: 0017_programs_pack
Revises: 0016_incremental_scans
Create Date: 2026-12-06

`inventory_packs` holds, per endpoint, six JSON arrays (name, version, publisher, product_code,
upgrade_code, arch) in the programs' id order, zlib-compressed (patchflow.fleet.programs_pack),
written whenever an inventory is stored. Existing inventories are packed here, a thousand
endpoints at a time, so the first scan after the upgrade already reads one value per endpoint;
an endpoint without a pack is read from installed_programs.
"""

from __future__ import annotations

import json
import zlib

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.mysql import LONGBLOB

revision = "0017_programs_pack"
down_revision = "0016_incremental_scans"
branch_labels = None
depends_on = None

_COLUMNS = ("name", "version", "publisher", "product_code", "upgrade_code", "arch")
_CHUNK = 1000


def upgrade() -> None:
    packs = op.create_table(
        "inventory_packs",
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("programs", sa.LargeBinary().with_variant(LONGBLOB(), "mysql"),
                  nullable=False),
        sa.ForeignKeyConstraint(["endpoint_id"], ["endpoints.id"], ondelete="CASCADE",
                                name=op.f("fk_inventory_packs_endpoint_id_endpoints")),
        sa.PrimaryKeyConstraint("endpoint_id", name=op.f("pk_inventory_packs")),
    )
    conn = op.get_bind()
    ids = [row[0] for row in conn.execute(sa.text("SELECT id FROM endpoints ORDER BY id"))]
    programs = sa.table("installed_programs", sa.column("id"), sa.column("endpoint_id"),
                        *(sa.column(c) for c in _COLUMNS))
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        columns: dict[int, list[list[object]]] = {e: [[] for _ in _COLUMNS] for e in chunk}
        rows = conn.execute(
            sa.select(programs.c.endpoint_id, *(programs.c[c] for c in _COLUMNS))
            .where(programs.c.endpoint_id.in_(chunk))
            .order_by(programs.c.endpoint_id, programs.c.id))
        for endpoint_id, *values in rows:
            for column, value in zip(columns[endpoint_id], values, strict=True):
                column.append(value)
        op.bulk_insert(packs, [
            {"endpoint_id": e,
             "programs": zlib.compress(json.dumps(cols, separators=(",", ":")).encode(), 1)}
            for e, cols in columns.items()])


def downgrade() -> None:
    op.drop_table("inventory_packs")
