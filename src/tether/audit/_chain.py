"""The hash chain: each entry's hash covers its predecessor's hash and all its fields."""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from tether._internal.timeutil import format_time
from tether.model import AuditRecord

GENESIS_HASH = "0" * 64
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


#: What an entry's hash covers, in the order the hash reads them: every field but the
#: hash itself, the predecessor's hash first. A stored contract (every chain ever written
#: verifies against this order), so it is spelled out, not derived from the dataclass.
HASHED_FIELDS = (
    "prev_hash",
    "seq",
    "ts",
    "action",
    "actor",
    "result",
    "identity_id",
    "owner_id",
    "task_id",
    "reason",
    "justification",
    "details",
)
_HASHED_VALUES = operator.attrgetter(*HASHED_FIELDS)
_TS = HASHED_FIELDS.index("ts")


def hash_values(values: Sequence[object]) -> str:
    """The hash of an entry from its `HASHED_FIELDS` values, in that order (`ts` as text)."""
    return hashlib.sha256(_ENCODER.encode(values).encode()).hexdigest()


def record_hash(r: AuditRecord, ts_text: str | None = None) -> str:
    """The hash `r` must carry: over its predecessor's hash and all its fields.

    `ts_text` is `format_time(r.ts)` when the caller already has it (one per batch)."""
    values = list(_HASHED_VALUES(r))
    values[_TS] = ts_text or format_time(r.ts)
    return hash_values(values)


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    head_hash: str
    #: The sequence number of the first entry that does not verify, if any.
    first_bad_seq: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify_chain(
    records: Iterable[AuditRecord], expected_head: tuple[int, str] | None = None
) -> Verification:
    """Check sequence, linkage and every hash; name the first entry that fails.

    An edited row fails its own hash; a deleted, inserted or reordered row breaks the
    sequence or the link to its predecessor; a truncated tail disagrees with the head.
    """
    prev_hash = GENESIS_HASH
    expected_seq = 1
    count = 0
    # Entries appended in one batch share a timestamp: format it once per batch.
    last_ts, ts_text = None, ""
    # The hash of the entry the expected head names, to tell entries added past it.
    head_seq_wanted = -1 if expected_head is None else expected_head[0]
    hash_at_head = GENESIS_HASH
    for r in records:
        if r.ts != last_ts:
            last_ts, ts_text = r.ts, format_time(r.ts)
        if r.seq != expected_seq:
            problem = f"entry {r.seq} is out of sequence: expected entry {expected_seq}"
            return Verification(False, count, prev_hash, expected_seq, problem)
        if r.prev_hash != prev_hash:
            problem = f"entry {r.seq} does not link to entry {r.seq - 1}"
            return Verification(False, count, prev_hash, r.seq, problem)
        if record_hash(r, ts_text) != r.hash:
            problem = f"entry {r.seq} was modified: its contents do not match its hash"
            return Verification(False, count, prev_hash, r.seq, problem)
        prev_hash = r.hash
        if r.seq == head_seq_wanted:
            hash_at_head = r.hash
        expected_seq += 1
        count += 1
    if expected_head is not None and expected_head != (count, prev_hash):
        head_seq, head_hash = expected_head
        if head_seq > count:
            problem = f"entries {count + 1}..{head_seq} are missing: the log was truncated"
            first_bad = count + 1
        elif head_seq < count and hash_at_head == head_hash:
            problem = f"entries {head_seq + 1}..{count} were added past the log head"
            first_bad = head_seq + 1
        else:
            problem = f"the log head (entry {head_seq}) disagrees with the chain"
            first_bad = max(head_seq, 1)
        return Verification(False, count, prev_hash, first_bad, problem)
    return Verification(True, count, prev_hash)
