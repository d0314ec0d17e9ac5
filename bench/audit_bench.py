"""Audit: batched append throughput (durable, SQLite) and verifying 1,000,000 entries."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tether.audit import AuditLog, verify_chain
from tether.model import AuditEvent
from tether.store import open_store

BATCH = 1_000


def run(tmp: Path, quick: bool) -> dict[str, Any]:
    total = 50_000 if quick else 1_000_000
    store = open_store(f"sqlite:///{tmp / 'audit.db'}")
    store.migrate()
    key = os.urandom(32)
    log = AuditLog(lambda: key)
    events = [
        AuditEvent(
            action="credential.issue",
            actor="token:tok_bench(bench)",
            identity_id=f"nhi-{i % 997:05d}",
            owner_id="team-a",
            task_id=f"task-{i % 31}",
            justification="CHG-2041",
            details={"profile": "orders-api-read", "ttl": 900},
            sensitive={"jti": f"jti-{i}"},
        )
        for i in range(BATCH)
    ]
    started = time.perf_counter()
    for _ in range(total // BATCH):
        with store.transaction() as tx:
            log.append(tx, events)
    append_seconds = time.perf_counter() - started

    started = time.perf_counter()
    with store.read() as tx:
        head = tx.audit_head()
    result = verify_chain(store.iter_audit(), expected_head=head)
    verify_seconds = time.perf_counter() - started
    assert result.ok and result.entries == total, result
    store.close()
    return {
        "entries": total,
        "batch": BATCH,
        "append_events_per_s": round(total / append_seconds),
        "append_target_per_s": 20_000,
        "verify_seconds": round(verify_seconds, 2),
        "verify_entries_per_s": round(total / verify_seconds),
        "verify_target_seconds_for_1m": 15,
        "verify_seconds_scaled_to_1m": round(verify_seconds * 1_000_000 / total, 2),
    }
