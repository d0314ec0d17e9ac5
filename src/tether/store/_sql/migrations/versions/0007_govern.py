"""Governance: usage rollups (per identity, credential and entitlement per day) and
governance records (findings, review campaigns and items, exceptions, alerts).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tether.store._sql.tables import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_rollups",
        sa.Column("identity_id", sa.String(255), primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("credential", sa.String(255), primary_key=True),
        sa.Column("entitlement", sa.String(255), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("first_seen", UTCDateTime, nullable=False),
        sa.Column("last_seen", UTCDateTime, nullable=False),
        sa.Column("facets", sa.Text, nullable=False),
    )
    op.create_index("ix_usage_rollups_day", "usage_rollups", ["day"])
    op.create_table(
        "govern_records",
        sa.Column("type", sa.String(32), primary_key=True),
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("group_id", sa.String(255), nullable=False),
        sa.Column("identity_id", sa.String(255)),
        sa.Column("owner_id", sa.String(255)),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_govern_records_identity", "govern_records", ["type", "identity_id"])
    op.create_index(
        "ix_govern_records_group_state", "govern_records", ["type", "group_id", "state"]
    )
    op.create_index("ix_govern_records_owner", "govern_records", ["type", "owner_id"])


def downgrade() -> None:
    op.drop_index("ix_govern_records_owner", "govern_records")
    op.drop_index("ix_govern_records_group_state", "govern_records")
    op.drop_index("ix_govern_records_identity", "govern_records")
    op.drop_table("govern_records")
    op.drop_index("ix_usage_rollups_day", "usage_rollups")
    op.drop_table("usage_rollups")
