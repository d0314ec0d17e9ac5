"""Leases remember the target system that holds their credential.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("target", sa.String(255)))
    op.create_index("ix_leases_state_issued", "leases", ["state", "issued_at"])


def downgrade() -> None:
    op.drop_index("ix_leases_state_issued", "leases")
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("target")
