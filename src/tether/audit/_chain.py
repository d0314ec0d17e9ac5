"""The hash chain: each entry's hash covers its predecessor's hash and all its fields."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from tether._internal.timeutil import format_time, parse_time
from tether.model import AuditRecord

GENESIS_HASH = "0" * 64
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def entry_hash(
    prev_hash: str,
    seq: int,
    ts: str,
    action: str,
    actor: str,
    result: str,
    identity_id: str | None,
    owner_id: str | None,
    task_id: str | None,
    reason: str | None,
    justification: str | None,
    details: str,
) -> str:
    body = _ENCODER.encode(
        [
            prev_hash,
            seq,
            ts,
            action,
            actor,
            result,
            identity_id,
            owner_id,
            task_id,
            reason,
            justification,
            details,
        ],
    )
    return hashlib.sha256(body.encode()).hexdigest()


def record_hash(r: AuditRecord, ts_text: str | None = None) -> str:
    return entry_hash(
        r.prev_hash,
        r.seq,
        ts_text or format_time(r.ts),
        r.action,
        r.actor,
        r.result,
        r.identity_id,
        r.owner_id,
        r.task_id,
        r.reason,
        r.justification,
        r.details,
    )


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    entries: int
    head_hash: str
    #: The sequence number of the first entry that does not verify, if any.
    first_bad_seq: int | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head_hash": self.head_hash,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
        }


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


def record_to_json(r: AuditRecord) -> dict[str, Any]:
    return {
        "seq": r.seq,
        "ts": format_time(r.ts),
        "action": r.action,
        "actor": r.actor,
        "result": r.result,
        "identity_id": r.identity_id,
        "owner_id": r.owner_id,
        "task_id": r.task_id,
        "reason": r.reason,
        "justification": r.justification,
        "details": r.details,
        "prev_hash": r.prev_hash,
        "hash": r.hash,
    }


def record_from_json(doc: dict[str, Any]) -> AuditRecord:
    return AuditRecord(
        seq=int(doc["seq"]),
        ts=parse_time(doc["ts"]),
        action=doc["action"],
        actor=doc["actor"],
        result=doc["result"],
        identity_id=doc.get("identity_id"),
        owner_id=doc.get("owner_id"),
        task_id=doc.get("task_id"),
        reason=doc.get("reason"),
        justification=doc.get("justification"),
        details=doc["details"],
        prev_hash=doc["prev_hash"],
        hash=doc["hash"],
    )


def write_jsonl(records: Iterable[AuditRecord], out: IO[str]) -> int:
    count = 0
    for r in records:
        out.write(json.dumps(record_to_json(r), ensure_ascii=False, separators=(",", ":")))
        out.write("\n")
        count += 1
    return count


def read_jsonl(lines: Iterable[str]) -> Iterator[AuditRecord]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield record_from_json(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"line {number} is not an audit entry: {exc}") from None
