"""Agent runs and delegation chains: a task's run (intent, principal, window) and a
lease's whole RFC 8693 actor chain.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("run", sa.Text))
    with op.batch_alter_table("leases") as batch:
        batch.add_column(sa.Column("delegation", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("leases") as batch:
        batch.drop_column("delegation")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("run")
