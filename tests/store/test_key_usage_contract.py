"""Key usage counters and sealed-record removal: one contract on memory, SQLite and
PostgreSQL; reservations from many threads never overlap."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

from tests.store.schema import migrated
from tether.store import KeyUsageCount, SealedRecord, Store

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def test_reservations_add_up_and_return_the_new_total(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.reserve_key_usage("dek", 1, 100) == 100
        assert tx.reserve_key_usage("dek", 1, 28) == 128
        assert tx.reserve_key_usage("dek", 2, 5) == 5
        assert tx.reserve_key_usage("other", 1, 1) == 1
    with store.read() as tx:
        assert tx.key_usage("dek") == [
            KeyUsageCount("dek", 1, 128, 0, None),
            KeyUsageCount("dek", 2, 5, 0, None),
        ]


def test_a_rolled_back_reservation_counts_nothing(store: Store) -> None:
    try:
        with store.transaction() as tx:
            tx.reserve_key_usage("dek", 1, 10)
            raise RuntimeError("crash before commit")
    except RuntimeError:
        pass
    with store.read() as tx:
        assert tx.key_usage("dek") == []


def test_concurrent_reservations_get_disjoint_blocks(store: Store) -> None:
    totals: list[int] = []
    lock = threading.Lock()

    def reserve() -> None:
        for _ in range(25):
            with store.transaction() as tx:
                total = tx.reserve_key_usage("dek", 1, 10)
            with lock:
                totals.append(total)

    threads = [threading.Thread(target=reserve) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(totals) == list(range(10, 1001, 10))  # every block once, none shared
    with store.read() as tx:
        assert tx.key_usage("dek")[0].encryptions == 1000


def test_decryptions_add_and_keep_the_latest_time(store: Store) -> None:
    with store.transaction() as tx:
        tx.reserve_key_usage("dek", 1, 3)
        tx.add_key_decryptions([("dek", 1, 2), ("dek", 2, 1), ("dek", 1, 1)], T0)
    with store.transaction() as tx:
        tx.add_key_decryptions([("dek", 1, 4)], T0 - dt.timedelta(hours=1))
    with store.read() as tx:
        assert tx.key_usage("dek") == [
            KeyUsageCount("dek", 1, 3, 7, T0),
            KeyUsageCount("dek", 2, 0, 1, T0),
        ]
    with store.transaction() as tx:
        assert tx.delete_key_usage("dek", [2]) == 1
        assert tx.delete_key_usage("dek", []) == 0
    with store.read() as tx:
        assert [u.version for u in tx.key_usage("dek")] == [1]
    with store.transaction() as tx:
        assert tx.delete_key_usage("dek") == 1
    with store.read() as tx:
        assert tx.key_usage("dek") == []


def test_sealed_records_can_be_removed_for_good(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(3):
            tx.put_sealed(SealedRecord(f"key/dek/v{i}", "key", 1, b"\x00" * 44))
    with store.transaction() as tx:
        assert tx.delete_sealed(["key/dek/v0", "key/dek/v1", "key/dek/v1", "missing"]) == 2
    with store.read() as tx:
        assert tx.get_sealed("key/dek/v0") is None
        assert tx.get_sealed("key/dek/v2") is not None


def test_the_migration_builds_the_key_usage_table_as_declared(tmp_path: Path) -> None:
    with migrated(tmp_path, "key_usage") as (diffs, schema):
        assert diffs == []
        assert "key_usage" in schema.get_table_names()
