from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


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
