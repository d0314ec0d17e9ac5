"""On SQLite, which has no statistics until ANALYZE, the statements that end leases must
find them by id. A plan through a state index walks every live lease once per batch:
with a million live leases that made expiry six times slower (bench/scale_bench.py)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from tests.store.test_leases_contract import _lease
from tether.model import LeaseState
from tether.store import open_store


def _plans(db: Path, statements: list[str]) -> list[str]:
    with sqlite3.connect(db) as conn:
        return [
            " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"))
            for sql in statements
        ]


def test_ending_and_checking_leases_looks_them_up_by_id(tmp_path: Path) -> None:
    db = tmp_path / "tether.db"
    store = open_store(f"sqlite:///{db}")
    store.migrate()
    with store.transaction() as tx:
        tx.insert_leases([_lease(f"l{i:04d}") for i in range(1200)])
    # A batch as large as expiry's: with a few ids SQLite's guess favours the id anyway.
    ids = [f"l{i:04d}" for i in range(1000)]
    seen: list[str] = []
    try:
        with store.transaction() as tx:
            # The driver's own trace: each statement as run, its values filled in.
            tx._c.connection.driver_connection.set_trace_callback(seen.append)
            assert tx.live_lease_ids([*ids, "nope"]) == set(ids)
            ended = tx.end_leases(ids, LeaseState.EXPIRED, dt.datetime.now(dt.UTC), "x")
            assert sorted(lease.id for lease in ended) == ids
            tx._c.connection.driver_connection.set_trace_callback(None)
    finally:
        store.close()
    by_id = [sql for sql in seen if "IN ('l0000', 'l0001'" in sql]
    assert len(by_id) == 2, seen
    for plan in _plans(db, by_id):
        assert "sqlite_autoindex_leases_1 (id=?)" in plan, plan
        assert "ix_leases_state" not in plan, plan
