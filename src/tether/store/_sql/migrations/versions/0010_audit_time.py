"""The audit log filtered, newest first, at a million entries (the dashboard's Audit page
and GET /v1/audit): by time through `ix_audit_ts`, and by identity or action in sequence
order: those two indexes gain `seq`, so the newest page of a frequent action is read from
the index's end instead of sorting every entry of that action.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

#: (name, columns before, columns after)
_WIDENED = (
    ("ix_audit_identity", ["identity_id"], ["identity_id", "seq"]),
    ("ix_audit_action", ["action"], ["action", "seq"]),
)


def upgrade() -> None:
    op.create_index("ix_audit_ts", "audit_log", ["ts"])
    for name, _, after in _WIDENED:
        op.drop_index(name, "audit_log")
        op.create_index(name, "audit_log", after)


def downgrade() -> None:
    for name, before, _ in _WIDENED:
        op.drop_index(name, "audit_log")
        op.create_index(name, "audit_log", before)
    op.drop_index("ix_audit_ts", "audit_log")
