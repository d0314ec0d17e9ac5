"""Concurrent writers keep one unbroken chain (the head row serializes them)."""

from __future__ import annotations

import os
import threading

from tether.audit import AuditLog, verify_chain
from tether.model import AuditEvent
from tether.store import Store


def test_parallel_appenders_keep_the_chain_intact(store: Store) -> None:
    key = os.urandom(32)
    log = AuditLog(lambda: key)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(25):
                with store.transaction() as tx:
                    log.append(tx, [AuditEvent(action="test", actor=f"w{n}", details={"i": i})])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with store.read() as tx:
        head = tx.audit_head()
    result = verify_chain(store.iter_audit(), expected_head=head)
    assert result.ok, result.problem
    assert result.entries == 100
