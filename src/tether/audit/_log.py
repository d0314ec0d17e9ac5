from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import operator
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

from tether._internal.canonical import canonical_json
from tether._internal.timeutil import format_time, utcnow
from tether.audit._chain import HASHED_FIELDS, hash_values
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
_EVENT_VALUES = operator.attrgetter(*_FROM_EVENT)
# `append` builds the hashed values and the record positionally (it is the hot path of
# every audited change): these are the layouts it relies on.
if ("prev_hash", "seq", "ts", *_FROM_EVENT, "details") != HASHED_FIELDS or (
    "seq",
    "ts",
    *_FROM_EVENT,
    "details",
    "prev_hash",
    "hash",
) != AUDIT_RECORD_FIELDS:  # not `assert`: `python -O` must not skip it
    raise RuntimeError("the audit record's fields no longer match the hashed layout")


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
                copied = _EVENT_VALUES(event)
                details_text = canonical_json(details)
                digest = hash_values([prev_hash, seq, ts_text, *copied, details_text])
                row: list[Any] = [seq, ts, *copied, details_text, prev_hash, digest]
                records.append(AuditRecord(*row))
                prev_hash = digest
            tx.append_audit(records)
        except TetherError as exc:
            raise AuditUnavailable(f"the audit log could not be written: {exc}") from None
        return records
