"""Core loop: tasks, leases, seen attestation token ids, join tokens.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tether.store._sql.tables import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tasks",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("identity_id", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("deadline", UTCDateTime, nullable=False),
        sa.Column("attestation_expires_at", UTCDateTime),
        sa.Column("ends_at", UTCDateTime, nullable=False),
        sa.Column("issuer_id", sa.String(255)),
        sa.Column("run_key", sa.String(512)),
        sa.Column("implicit", sa.Integer, nullable=False),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("end_reason", sa.Text),
        sa.Column("claims", sa.Text, nullable=False),
    )
    op.create_index("ix_tasks_identity", "tasks", ["identity_id"])
    op.create_index("ix_tasks_status_ends", "tasks", ["status", "ends_at"])
    op.create_index("ix_tasks_run", "tasks", ["identity_id", "run_key"])
    op.create_table(
        "leases",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("identity_id", sa.String(255), nullable=False),
        sa.Column("owner_id", sa.String(255), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("issued_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("task_id", sa.String(64)),
        sa.Column("parent_id", sa.String(64)),
        sa.Column("profile_id", sa.String(255)),
        sa.Column("scopes", sa.Text, nullable=False),
        sa.Column("audience", sa.Text),
        sa.Column("token_hash", sa.String(64), unique=True),
        sa.Column("actor", sa.String(255)),
        sa.Column("revoke_attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", UTCDateTime),
        sa.Column("ended_at", UTCDateTime),
        sa.Column("end_reason", sa.Text),
    )
    for name, columns in (
        ("state_expires", ["state", "expires_at"]),
        ("task", ["task_id"]),
        ("identity", ["identity_id"]),
        ("owner", ["owner_id"]),
        ("parent", ["parent_id"]),
        ("state_retry", ["state", "next_attempt_at"]),
    ):
        op.create_index(f"ix_leases_{name}", "leases", columns)
    op.create_table(
        "seen_jti",
        sa.Column("issuer", sa.String(512), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_seen_jti_expires", "seen_jti", ["expires_at"])
    op.create_table(
        "join_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("identity_id", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("used_at", UTCDateTime),
    )


def downgrade() -> None:
    for table in ("join_tokens", "seen_jti", "leases", "tasks"):
        op.drop_table(table)
