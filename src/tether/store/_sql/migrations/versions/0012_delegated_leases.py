"""Governance reads the leases a rule can flag instead of every live lease: revoking
ones and old ones come from existing indexes, and delegated ones from this partial
index (a delegation is rare among leases; the index holds only those that have one).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_DELEGATED = sa.text("delegation IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_leases_delegated",
        "leases",
        ["state", "identity_id"],
        sqlite_where=_DELEGATED,
        postgresql_where=_DELEGATED,
    )


def downgrade() -> None:
    op.drop_index("ix_leases_delegated", "leases")
