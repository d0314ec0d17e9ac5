from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import fields, replace

from tether._internal.canonical import canonical_json
from tether._internal.timeutil import format_time, utcnow
from tether.audit._chain import record_hash
from tether.audit.errors import AuditUnavailable
from tether.errors import TetherError
from tether.model import AUDIT_RECORD_FIELDS, AuditEvent, AuditRecord
from tether.store import Tx

#: What an entry takes from its event as is (`details` is fingerprinted first).
_FROM_EVENT = tuple(
    name
    for name in AUDIT_RECORD_FIELDS
    if name != "details" and name in {f.name for f in fields(AuditEvent)}
)


class AuditLog:
    """Appends events to the chain inside the caller's transaction.

    Because the entry is written in the same transaction as the change it records, a
    change is never committed without its evidence, and a failed audit write fails it.
    """

    def __init__(
        self, audit_key: Callable[[], bytes], clock: Callable[[], dt.datetime] = utcnow
    ) -> None:
        self._audit_key = audit_key
        self._clock = clock

    def fingerprint(self, value: str) -> str:
        """HMAC of a sensitive value under the audit key: provable, not readable."""
        digest = hmac.new(self._audit_key(), value.encode(), hashlib.sha256).hexdigest()
        return f"hmac-sha256:{digest}"

    def append(
        self, tx: Tx, events: Sequence[AuditEvent], now: dt.datetime | None = None
    ) -> list[AuditRecord]:
        if not events:
            return []
        ts = now or self._clock()
        ts_text = format_time(ts)
        try:
            seq, prev_hash = tx.audit_head()
            records = []
            for event in events:
                seq += 1
                details = dict(event.details)
                for key, value in event.sensitive.items():
                    details[key] = self.fingerprint(value)
                unhashed = AuditRecord(
                    seq=seq,
                    ts=ts,
                    details=canonical_json(details),
                    prev_hash=prev_hash,
                    hash="",
                    **{name: getattr(event, name) for name in _FROM_EVENT},
                )
                record = replace(unhashed, hash=record_hash(unhashed, ts_text))
                records.append(record)
                prev_hash = record.hash
            tx.append_audit(records)
        except TetherError as exc:
            raise AuditUnavailable(f"the audit log could not be written: {exc}") from None
        return records
