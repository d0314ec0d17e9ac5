"""Filtered reads of the audit log (`Tx.search_audit`), run against memory, SQLite and
PostgreSQL alike: every backend answers the same question with the same entries."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from tests.store.schema import migrated
from tether.model import AuditRecord
from tether.store import AuditFilter, Store

_T0 = dt.datetime(2026, 3, 1, 9, 0, 0, 250_000, tzinfo=dt.UTC)
_ACTIONS = ("lease.issue", "lease.revoke", "alert.revoke_failed", "lease", "web.sign_in")
#: `_` and `%` are LIKE wildcards: a prefix must match them literally.
_WILDCARDS = ("a_b.x", "aXb.y", "a%c.z", "abbc.w")


def _log(n: int = 40) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = "0" * 64
    for seq in range(1, n + 1):
        actions = _WILDCARDS if seq > n - len(_WILDCARDS) else _ACTIONS
        record = AuditRecord(
            seq=seq,
            # One minute apart, microseconds kept.
            ts=_T0 + dt.timedelta(minutes=seq),
            action=actions[seq % len(actions)],
            actor=f"token:tok_{seq % 3}",
            result="denied" if seq % 4 == 0 else "ok",
            identity_id=None if seq % 5 == 0 else f"nhi-{seq % 2}",
            owner_id=None,
            task_id=None,
            reason=None,
            justification=None,
            details="{}",
            prev_hash=prev,
            hash=f"{seq:064x}",
        )
        records.append(record)
        prev = record.hash
    return records


@pytest.fixture
def log(store: Store) -> list[AuditRecord]:
    records = _log()
    with store.transaction() as tx:
        tx.append_audit(records)
    return records


def _seqs(store: Store, where: AuditFilter) -> list[int]:
    with store.read() as tx:
        return [r.seq for r in tx.search_audit(where)]


def test_newest_first_by_default_and_pages_both_ways(store: Store, log: list[AuditRecord]) -> None:
    assert _seqs(store, AuditFilter(limit=5)) == [40, 39, 38, 37, 36]
    assert _seqs(store, AuditFilter(before_seq=36, limit=5)) == [35, 34, 33, 32, 31]
    assert _seqs(store, AuditFilter(after_seq=36, newest_first=False, limit=3)) == [37, 38, 39]
    assert _seqs(store, AuditFilter(after_seq=10, before_seq=14)) == [13, 12, 11]
    # Paging older from the newest page visits every entry once.
    seen: list[int] = []
    before: int | None = None
    while page := _seqs(store, AuditFilter(before_seq=before, limit=7)):
        seen += page
        before = page[-1]
    assert seen == list(range(40, 0, -1))
    # The whole entry comes back, as it went in.
    with store.read() as tx:
        assert tx.search_audit(AuditFilter(limit=1)) == [log[-1]]


def test_each_field_narrows(store: Store, log: list[AuditRecord]) -> None:
    def expect(keep: object) -> list[int]:
        return [r.seq for r in reversed(log) if keep(r)]  # type: ignore[operator]

    assert _seqs(store, AuditFilter(actor="token:tok_1")) == expect(
        lambda r: r.actor == "token:tok_1"
    )
    assert _seqs(store, AuditFilter(identity_id="nhi-0")) == expect(
        lambda r: r.identity_id == "nhi-0"
    )
    assert _seqs(store, AuditFilter(result="denied")) == expect(lambda r: r.result == "denied")
    both = AuditFilter(actor="token:tok_2", identity_id="nhi-1", result="ok")
    assert _seqs(store, both) == expect(
        lambda r: (r.actor, r.identity_id, r.result) == ("token:tok_2", "nhi-1", "ok")
    )
    assert _seqs(store, AuditFilter(actor="nobody")) == []


def test_action_is_exact_or_a_prefix(store: Store, log: list[AuditRecord]) -> None:
    def actions(action: str) -> set[str]:
        with store.read() as tx:
            return {r.action for r in tx.search_audit(AuditFilter(action=action, limit=1000))}

    assert actions("lease") == {"lease"}
    assert actions("lease.") == {"lease.issue", "lease.revoke"}
    assert actions("lease.*") == {"lease.issue", "lease.revoke"}
    assert actions("lease*") == {"lease", "lease.issue", "lease.revoke"}
    assert actions("alert.") == {"alert.revoke_failed"}
    # LIKE's wildcards in a prefix are taken literally.
    assert actions("a_b.") == {"a_b.x"}
    assert actions("a%c.") == {"a%c.z"}
    assert actions("lease.issu") == set()


def test_since_is_inclusive_and_until_exclusive(store: Store, log: list[AuditRecord]) -> None:
    since, until = log[9].ts, log[14].ts  # seq 10 and 15, to the microsecond
    assert _seqs(store, AuditFilter(since=since, until=until)) == [14, 13, 12, 11, 10]
    assert _seqs(store, AuditFilter(since=since, until=until, newest_first=False, limit=2)) == [
        10,
        11,
    ]
    assert _seqs(store, AuditFilter(since=log[-1].ts + dt.timedelta(microseconds=1))) == []
    # A time in another offset is the same instant.
    east = dt.timezone(dt.timedelta(hours=5))
    assert _seqs(store, AuditFilter(until=log[2].ts.astimezone(east))) == [2, 1]
    assert (
        _seqs(store, AuditFilter(since=since, action="lease.", limit=3))
        == [r.seq for r in reversed(log) if r.seq >= 10 and r.action.startswith("lease.")][:3]
    )


def test_list_audit_is_a_search_oldest_first(store: Store, log: list[AuditRecord]) -> None:
    with store.read() as tx:
        assert tx.list_audit(0, 5) == log[:5]
        assert tx.list_audit(35, 100) == log[35:]
        assert tx.list_audit(0, 100, identity_id="nhi-1") == [
            r for r in log if r.identity_id == "nhi-1"
        ]
        assert tx.list_audit(0, 100, action_prefix="lease") == [
            r for r in log if r.action.startswith("lease")
        ]
        assert tx.list_audit(0, 100, action_prefix="a_b") == [r for r in log if r.action == "a_b.x"]


def test_the_migration_builds_the_time_index_as_declared(tmp_path: Path) -> None:
    with migrated(tmp_path, "audit") as (diffs, schema):
        assert diffs == []
        indexes = {i["name"]: i["column_names"] for i in schema.get_indexes("audit_log")}
        assert indexes["ix_audit_ts"] == ["ts"]
        assert indexes["ix_audit_identity"] == ["identity_id", "seq"]
        assert indexes["ix_audit_action"] == ["action", "seq"]
