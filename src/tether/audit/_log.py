from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Callable, Sequence

from tether._internal.canonical import canonical_json
from tether._internal.timeutil import format_time, utcnow
from tether.audit._chain import entry_hash
from tether.audit.errors import AuditUnavailable
from tether.errors import TetherError
from tether.model import AuditEvent, AuditRecord
from tether.store import Tx


class AuditLog:
    """Appends events to the chain inside the caller's transaction.

    Because the entry is written in the same transaction as the change it records, a
    change is never committed without its evidence, and a failed audit write fails it.
    """

    def __init__(self, audit_key: Callable[[], bytes]) -> None:
        self._audit_key = audit_key

    def fingerprint(self, value: str) -> str:
        """HMAC of a sensitive value under the audit key: provable, not readable."""
        digest = hmac.new(self._audit_key(), value.encode(), hashlib.sha256).hexdigest()
        return f"hmac-sha256:{digest}"

    def append(
        self, tx: Tx, events: Sequence[AuditEvent], now: dt.datetime | None = None
    ) -> list[AuditRecord]:
        if not events:
            return []
        ts = now or utcnow()
        ts_text = format_time(ts)
        try:
            seq, prev_hash = tx.audit_head()
            records = []
            for event in events:
                seq += 1
                details = dict(event.details)
                for key, value in event.sensitive.items():
                    details[key] = self.fingerprint(value)
                details_text = canonical_json(details)
                digest = entry_hash(
                    prev_hash,
                    seq,
                    ts_text,
                    event.action,
                    event.actor,
                    event.result,
                    event.identity_id,
                    event.owner_id,
                    event.task_id,
                    event.reason,
                    event.justification,
                    details_text,
                )
                records.append(
                    AuditRecord(
                        seq=seq,
                        ts=ts,
                        action=event.action,
                        actor=event.actor,
                        result=event.result,
                        identity_id=event.identity_id,
                        owner_id=event.owner_id,
                        task_id=event.task_id,
                        reason=event.reason,
                        justification=event.justification,
                        details=details_text,
                        prev_hash=prev_hash,
                        hash=digest,
                    )
                )
                prev_hash = digest
            tx.append_audit(records)
        except TetherError as exc:
            raise AuditUnavailable(f"the audit log could not be written: {exc}") from None
        return records
