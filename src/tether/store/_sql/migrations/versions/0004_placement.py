"""Leases record the placement they were justified for; identities index theirs.

Existing live leases are taken to have been issued for their identity's placement now.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from tether.store._sql.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _key(spec: dict[str, object]) -> str:
    # Placement.key, frozen here as it was when this migration was written.
    fields = [spec["owner"], spec["environment"], spec.get("region"), spec.get("vendor")]
    return json.dumps(fields, separators=(",", ":"))


def upgrade() -> None:
    with op.batch_alter_table("identities") as batch:
        batch.add_column(sa.Column("placement", sa.Text))
        batch.add_column(sa.Column("moved_at", UTCDateTime))
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("placement", sa.Text))
    op.create_index("ix_leases_identity_placement", "leases", ["identity_id", "state", "placement"])
    conn = op.get_bind()
    identities = sa.table("identities", sa.column("id"), sa.column("spec"), sa.column("placement"))
    leases = sa.table(
        "leases", sa.column("identity_id"), sa.column("state"), sa.column("placement")
    )
    rows = conn.execute(sa.select(identities.c.id, identities.c.spec)).fetchall()
    for row in rows:
        key = _key(json.loads(row.spec))
        conn.execute(sa.update(identities).where(identities.c.id == row.id).values(placement=key))
        conn.execute(
            sa.update(leases)
            .where(leases.c.identity_id == row.id, leases.c.state.in_(("pending", "active")))
            .values(placement=key)
        )


def downgrade() -> None:
    op.drop_index("ix_leases_identity_placement", "leases")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("placement")
    with op.batch_alter_table("identities") as batch:
        batch.drop_column("moved_at")
        batch.drop_column("placement")
