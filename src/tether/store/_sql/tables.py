"""The current schema as SQLAlchemy Core tables. Migrations under `migrations/` build it."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Date,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    text,
)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]
        return value.astimezone(dt.UTC)  # type: ignore[no-any-return]


metadata = MetaData()

meta = Table(
    "tether_meta",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", LargeBinary, nullable=False),
)

sealed_records = Table(
    "sealed_records",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("purpose", String(64), nullable=False),
    Column("term", Integer, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_sealed_records_term", "term"),
)

estate_objects = Table(
    "estate_objects",
    metadata,
    Column("type", String(32), primary_key=True),
    Column("id", String(255), primary_key=True),
    Column("spec", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

identities = Table(
    "identities",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("owner_id", String(255), nullable=False),
    Column("environment", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("vendor_id", String(255)),
    Column("approval_expires_at", UTCDateTime),
    Column("expires_at", UTCDateTime),
    #: Placement.key of the identity (owner, environment, region, vendor).
    Column("placement", Text),
    #: When the placement last changed; NULL if it never did (the sweep then skips the
    #: per-lease comparison).
    Column("moved_at", UTCDateTime),
    Column("spec", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_identities_kind", "kind"),
    Index("ix_identities_owner", "owner_id"),
    Index("ix_identities_environment", "environment"),
    Index("ix_identities_status", "status"),
    Index("ix_identities_vendor", "vendor_id"),
    Index("ix_identities_approval_expires", "approval_expires_at"),
    Index("ix_identities_expires", "expires_at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("action", String(64), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("result", String(16), nullable=False),
    Column("identity_id", String(255)),
    Column("owner_id", String(255)),
    Column("task_id", String(255)),
    Column("reason", Text),
    Column("justification", Text),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # With seq: a filtered page, newest first, is read off the end of the index.
    Index("ix_audit_identity", "identity_id", "seq"),
    Index("ix_audit_action", "action", "seq"),
    Index("ix_audit_ts", "ts"),
)

# One row that holds the chain's head: appenders lock it, so replicas append in order.
audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", String(64), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", String(255), nullable=False),
    Column("roles", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("expires_at", UTCDateTime),
    Column("revoked_at", UTCDateTime),
)

#: Dashboard sessions (tether.web): the cookie is checked against its row, so signing
#: out ends the session everywhere.
web_sessions = Table(
    "web_sessions",
    metadata,
    #: SHA-256 of the session's nonce: the cookie's content is not stored.
    Column("id", String(64), primary_key=True),
    Column("token_id", String(64), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime),
    Index("ix_web_sessions_expires", "expires_at"),
)

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("identity_id", String(255), nullable=False),
    Column("name", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("deadline", UTCDateTime, nullable=False),
    Column("attestation_expires_at", UTCDateTime),
    Column("ends_at", UTCDateTime, nullable=False),
    Column("issuer_id", String(255)),
    Column("run_key", String(512)),
    Column("implicit", Integer, nullable=False),
    Column("ended_at", UTCDateTime),
    Column("end_reason", Text),
    Column("claims", Text, nullable=False),
    #: An agent run's intent, principal and window (JSON); NULL: a plain task.
    Column("run", Text),
    Index("ix_tasks_identity", "identity_id"),
    Index("ix_tasks_status_ends", "status", "ends_at"),
    Index("ix_tasks_run", "identity_id", "run_key"),
)

leases = Table(
    "leases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("identity_id", String(255), nullable=False),
    Column("owner_id", String(255), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("state", String(16), nullable=False),
    Column("task_id", String(64)),
    Column("parent_id", String(64)),
    Column("profile_id", String(255)),
    Column("scopes", Text, nullable=False),
    Column("audience", Text),
    Column("token_hash", String(64), unique=True),
    Column("actor", String(255)),
    Column("target", String(255)),
    Column("revoke_attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("end_reason", Text),
    #: Placement.key the credential was justified for.
    Column("placement", Text),
    #: The RFC 8693 actor chain, nearest first, space-separated; NULL: not delegated.
    Column("delegation", Text),
    Index("ix_leases_state_expires", "state", "expires_at"),
    Index("ix_leases_task", "task_id"),
    Index("ix_leases_owner", "owner_id"),
    Index("ix_leases_parent", "parent_id"),
    Index("ix_leases_state_retry", "state", "next_attempt_at"),
    Index("ix_leases_state_issued", "state", "issued_at"),
    Index("ix_leases_identity_placement", "identity_id", "state", "placement"),
    # Only the leases with a delegation chain (migration 0012).
    Index(
        "ix_leases_delegated",
        "state",
        "identity_id",
        sqlite_where=text("delegation IS NOT NULL"),
        postgresql_where=text("delegation IS NOT NULL"),
    ),
)

seen_jti = Table(
    "seen_jti",
    metadata,
    Column("issuer", String(512), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
    Index("ix_seen_jti_expires", "expires_at"),
)

join_tokens = Table(
    "join_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("identity_id", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("used_at", UTCDateTime),
)

# -- cluster (tether.cluster): the change feed and the leadership lease --

#: Changes other nodes must act on (cache invalidations), in commit order: `seq` is
#: handed out by `cluster_event_head`, whose row each publisher locks until it commits.
cluster_events = Table(
    "cluster_events",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(64), nullable=False),
    Column("data", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_cluster_events_created", "created_at"),
)

cluster_event_head = Table(
    "cluster_event_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
)

#: Who runs the background work: `term` grows with every change of holder (the fencing
#: token); `expires_at` is the database's clock in seconds since the epoch.
leadership = Table(
    "leadership",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(255), nullable=False),
    Column("term", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),
)

# -- governance (tether.govern): usage rollups and governance records --

#: Use per identity, credential and entitlement per UTC day: bounded (facets capped at
#: USAGE_DISTINCT_CAP values each), never one row per event.
usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("identity_id", String(255), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("credential", String(255), primary_key=True),
    Column("entitlement", String(255), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    #: {facet: [distinct values, sorted]} as canonical JSON.
    Column("facets", Text, nullable=False),
    Index("ix_usage_rollups_day", "day"),
)

#: Findings, review campaigns and items, exceptions and alerts: `spec` is the record.
govern_records = Table(
    "govern_records",
    metadata,
    Column("type", String(32), primary_key=True),
    Column("id", String(255), primary_key=True),
    Column("group_id", String(255), nullable=False),
    Column("identity_id", String(255)),
    Column("owner_id", String(255)),
    Column("state", String(32), nullable=False),
    Column("spec", Text, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_govern_records_identity", "type", "identity_id"),
    Index("ix_govern_records_group_state", "type", "group_id", "state"),
    Index("ix_govern_records_owner", "type", "owner_id"),
)

# -- confidentiality keys (tether.keys): usage counters (metadata is an estate object of
# type "key", material a sealed record) --

#: Per key version: encryptions reserved (in blocks, so never fewer than were made) and
#: decryptions counted, with the latest decryption's time.
key_usage = Table(
    "key_usage",
    metadata,
    Column("key_name", String(255), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("encryptions", BigInteger, nullable=False),
    Column("decryptions", BigInteger, nullable=False),
    Column("last_decrypted_at", UTCDateTime),
)
