"""The audit trail: append-only, hash-chained, verifiable offline.

Every administrative change and every decision becomes an entry that names its actor,
identity, owner, action, result, reason and justification. Sensitive values are stored
as HMACs under the audit key. `verify_chain` needs no key: anyone holding an export can
check that no entry was edited, deleted, inserted or reordered.
"""

from tether.audit._chain import GENESIS_HASH, Verification, verify_chain
from tether.audit._export import jsonl_line, read_jsonl, record_to_json, write_jsonl
from tether.audit._log import AuditLog
from tether.audit.errors import AuditError, AuditUnavailable

__all__ = [
    "GENESIS_HASH",
    "AuditError",
    "AuditLog",
    "AuditUnavailable",
    "Verification",
    "jsonl_line",
    "read_jsonl",
    "record_to_json",
    "verify_chain",
    "write_jsonl",
]
