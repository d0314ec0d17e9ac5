"""Leases by identity are served by `ix_leases_identity_placement` (identity first), so
the single-column index is dropped: one index fewer to maintain on every lease write.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_leases_identity", "leases")


def downgrade() -> None:
    op.create_index("ix_leases_identity", "leases", ["identity_id"])
