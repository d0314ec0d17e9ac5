"""Foundation: barrier metadata, sealed records, estate, identities, audit, API tokens.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tether.store._sql.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tether_meta",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "sealed_records",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("term", sa.Integer, nullable=False),
        sa.Column("ciphertext", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_sealed_records_term", "sealed_records", ["term"])
    op.create_table(
        "estate_objects",
        sa.Column("type", sa.String(32), primary_key=True),
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "identities",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(255), nullable=False),
        sa.Column("environment", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("vendor_id", sa.String(255)),
        sa.Column("approval_expires_at", UTCDateTime),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    for name, column in (
        ("kind", "kind"),
        ("owner", "owner_id"),
        ("environment", "environment"),
        ("status", "status"),
        ("vendor", "vendor_id"),
        ("approval_expires", "approval_expires_at"),
        ("expires", "expires_at"),
    ):
        op.create_index(f"ix_identities_{name}", "identities", [column])
    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("ts", UTCDateTime, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("identity_id", sa.String(255)),
        sa.Column("owner_id", sa.String(255)),
        sa.Column("task_id", sa.String(255)),
        sa.Column("reason", sa.Text),
        sa.Column("justification", sa.Text),
        sa.Column("details", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_index("ix_audit_identity", "audit_log", ["identity_id"])
    op.create_index("ix_audit_action", "audit_log", ["action"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.execute(
        sa.text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, :genesis)").bindparams(
            genesis="0" * 64
        )
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("roles", sa.Text, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("revoked_at", UTCDateTime),
    )


def downgrade() -> None:
    for table in (
        "api_tokens",
        "audit_head",
        "audit_log",
        "identities",
        "estate_objects",
        "sealed_records",
        "tether_meta",
    ):
        op.drop_table(table)
