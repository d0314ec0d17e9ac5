"""Many nodes on one database: the change feed (events in commit order, with the counter
that orders them) and the leadership lease of the background work.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tether.store._sql.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cluster_events",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_cluster_events_created", "cluster_events", ["created_at"])
    op.create_table(
        "cluster_event_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.execute(sa.text("INSERT INTO cluster_event_head (id, seq) VALUES (1, 0)"))
    op.create_table(
        "leadership",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(255), nullable=False),
        sa.Column("term", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leadership")
    op.drop_table("cluster_event_head")
    op.drop_index("ix_cluster_events_created", "cluster_events")
    op.drop_table("cluster_events")
