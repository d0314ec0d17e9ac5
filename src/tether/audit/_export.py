"""The audit log as JSON: one object per entry (the API's listings), one line per entry
(exports, verified offline by `tether audit verify --file`).

Both directions are derived from `AuditRecord`'s fields: the keys are its field names
in declaration order, `ts` is RFC 3339, and only the optional fields may be absent.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tether._internal.timeutil import format_time, parse_time
from tether.model import AUDIT_OPTIONAL_FIELDS, AUDIT_RECORD_FIELDS, AuditRecord


def record_to_json(r: AuditRecord) -> dict[str, Any]:
    doc = {name: getattr(r, name) for name in AUDIT_RECORD_FIELDS}
    doc["ts"] = format_time(r.ts)
    return doc


def record_from_json(doc: dict[str, Any]) -> AuditRecord:
    """An entry from its JSON form; KeyError names a required field that is missing."""
    values: dict[str, Any] = {
        name: doc.get(name) if name in AUDIT_OPTIONAL_FIELDS else doc[name]
        for name in AUDIT_RECORD_FIELDS
    }
    values["seq"] = int(values["seq"])
    values["ts"] = parse_time(values["ts"])
    return AuditRecord(**values)


def jsonl_line(r: AuditRecord) -> str:
    """One line of an export, newline included."""
    return json.dumps(record_to_json(r), ensure_ascii=False, separators=(",", ":")) + "\n"


def write_jsonl(records: Iterable[AuditRecord], out: IO[str]) -> int:
    count = 0
    for r in records:
        out.write(jsonl_line(r))
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
