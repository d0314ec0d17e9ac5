"""Confidentiality keys: per-version usage counters (encryptions reserved in blocks,
decryptions counted).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tether.store._sql.tables import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_usage",
        sa.Column("key_name", sa.String(255), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("encryptions", sa.BigInteger, nullable=False),
        sa.Column("decryptions", sa.BigInteger, nullable=False),
        sa.Column("last_decrypted_at", UTCDateTime),
    )


def downgrade() -> None:
    op.drop_table("key_usage")
