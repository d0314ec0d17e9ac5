from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_type_hints


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Something that happened, before it is chained into the log.

    `sensitive` values never reach storage: the audit log replaces each one with an
    HMAC under the audit key, so an auditor holding a candidate value can prove it
    appeared without the log revealing it.
    """

    action: str
    actor: str
    result: str = "ok"
    identity_id: str | None = None
    owner_id: str | None = None
    task_id: str | None = None
    reason: str | None = None
    justification: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    sensitive: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored, chained audit entry."""

    seq: int
    ts: dt.datetime
    action: str
    actor: str
    result: str
    identity_id: str | None
    owner_id: str | None
    task_id: str | None
    reason: str | None
    justification: str | None
    #: Canonical JSON of the details, with sensitive values already replaced by HMACs.
    details: str
    prev_hash: str
    hash: str


#: AuditRecord's fields in declaration order. The audit table's columns and the keys of an
#: exported entry are these names: the store and the export derive their mappings from here.
AUDIT_RECORD_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(AuditRecord))
#: The fields an entry may leave empty (typed `... | None`); every other one is always set.
AUDIT_OPTIONAL_FIELDS: frozenset[str] = frozenset(
    name for name, hint in get_type_hints(AuditRecord).items() if type(None) in get_args(hint)
)
