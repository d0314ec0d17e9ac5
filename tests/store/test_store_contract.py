"""The storage contract, run against memory, SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt
import os

import pytest
import sqlalchemy as sa

from tether._internal.timeutil import utcnow
from tether.model import AUDIT_RECORD_FIELDS, AuditRecord
from tether.store import ApiTokenRecord, IdentityFilter, SealedRecord, Store, StoreError


def _identity(identity_id: str, **extra: object) -> dict[str, object]:
    spec: dict[str, object] = {
        "id": identity_id,
        "kind": "workload",
        "owner": "team-a",
        "purpose": "p",
        "justification": "j",
        "environment": "prod",
        "status": "active",
        "approval": {"by": "dana@example.com", "expires": "2027-01-31T00:00:00Z"},
    }
    spec.update(extra)
    return spec


def test_a_committed_transaction_is_visible_and_a_failed_one_leaves_nothing(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_meta("k", b"v1")
        tx.put_identity(_identity("a"))
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.put_meta("k", b"v2")
        tx.put_identity(_identity("b"))
        tx.put_estate_object("owner", "o", {"id": "o"})
        raise RuntimeError("boom")
    with store.read() as tx:
        assert tx.get_meta("k") == b"v1"
        assert tx.get_identity("b") is None
        assert tx.estate_objects("owner") == {}
        assert tx.get_identity("a") == _identity("a")


def test_identities_filter_and_page_in_id_order(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(30):
            tx.put_identity(
                _identity(
                    f"id-{i:02d}",
                    kind="api_key" if i % 3 == 0 else "workload",
                    owner="team-a" if i % 2 else "team-b",
                    environment="prod" if i < 15 else "dev",
                    status="retired" if i == 29 else "active",
                )
            )
    with store.read() as tx:
        page1 = tx.list_identities(IdentityFilter(limit=10))
        page2 = tx.list_identities(IdentityFilter(limit=10, after_id=page1[-1]["id"]))
        assert [s["id"] for s in page1] == [f"id-{i:02d}" for i in range(10)]
        assert [s["id"] for s in page2] == [f"id-{i:02d}" for i in range(10, 20)]
        api_keys = tx.list_identities(IdentityFilter(kind="api_key"))
        assert {s["id"] for s in api_keys} == {f"id-{i:02d}" for i in range(0, 30, 3)}
        team_a_dev = tx.list_identities(IdentityFilter(owner_id="team-a", environment="dev"))
        assert {s["id"] for s in team_a_dev} == {f"id-{i:02d}" for i in range(15, 30) if i % 2}
        scoped = tx.list_identities(IdentityFilter(owner_in=("team-b",)))
        assert all(s["owner"] == "team-b" for s in scoped) and len(scoped) == 15
        retired = tx.list_identities(IdentityFilter(status="retired"))
        assert [s["id"] for s in retired] == ["id-29"]


def test_put_identity_updates_in_place(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_identity(_identity("a"))
    with store.transaction() as tx:
        tx.put_identity(_identity("a", status="retired", purpose="changed"))
    with store.read() as tx:
        assert tx.get_identity("a") == _identity("a", status="retired", purpose="changed")
        assert len(tx.identity_specs()) == 1


def test_estate_objects_by_type(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_estate_object("owner", "a", {"id": "a", "contact": "x"})
        tx.put_estate_object("owner", "b", {"id": "b", "contact": "y"})
        tx.put_estate_object("vendor", "a", {"id": "a"})
    with store.transaction() as tx:
        tx.put_estate_object("owner", "a", {"id": "a", "contact": "z"})
        tx.delete_estate_object("owner", "b")
    with store.read() as tx:
        assert tx.estate_objects("owner") == {"a": {"id": "a", "contact": "z"}}
        assert tx.estate_objects("vendor") == {"a": {"id": "a"}}


def test_sealed_records_by_term(store: Store) -> None:
    with store.transaction() as tx:
        for i in range(5):
            tx.put_sealed(SealedRecord(f"r{i}", "static", 1 if i < 3 else 2, os.urandom(40)))
    with store.read() as tx:
        assert [r.id for r in tx.sealed_below_term(2, 10)] == ["r0", "r1", "r2"]
        assert [r.id for r in tx.sealed_below_term(2, 2)] == ["r0", "r1"]
        assert tx.get_sealed("r4") is not None and tx.get_sealed("r4").term == 2  # type: ignore[union-attr]
        assert tx.get_sealed("missing") is None


def _record(seq: int, prev: str) -> AuditRecord:
    return AuditRecord(
        seq=seq,
        ts=dt.datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=dt.UTC),
        action="a",
        actor="x",
        result="ok",
        identity_id="i" if seq % 2 else None,
        owner_id=None,
        task_id=None,
        reason=None,
        justification="j",
        details="{}",
        prev_hash=prev,
        hash=f"{seq:064d}",
    )


def test_audit_head_append_list_and_stream(store: Store) -> None:
    with store.read() as tx:
        assert tx.audit_head() == (0, "0" * 64)
    records = [_record(1, "0" * 64)]
    for seq in range(2, 26):
        records.append(_record(seq, records[-1].hash))
    with store.transaction() as tx:
        tx.append_audit(records[:10])
    with store.transaction() as tx:
        assert tx.audit_head() == (10, records[9].hash)
        tx.append_audit(records[10:])
    with store.read() as tx:
        assert tx.audit_head() == (25, records[-1].hash)
        assert tx.list_audit(0, 5) == records[:5]
        assert tx.list_audit(20, 100) == records[20:]
        assert all(r.identity_id == "i" for r in tx.list_audit(0, 100, identity_id="i"))
    # Timestamps keep microseconds and come back timezone-aware on every backend.
    assert list(store.iter_audit(batch=7)) == records


def test_api_tokens(store: Store) -> None:
    now = utcnow()
    record = ApiTokenRecord("tok_1", "h" * 64, "ci", ("admin", "owner:team-a"), now, "init")
    with store.transaction() as tx:
        tx.put_api_token(record)
    with pytest.raises(StoreError), store.transaction() as tx:
        tx.put_api_token(ApiTokenRecord("tok_2", "h" * 64, "dup", ("admin",), now, "init"))
    with store.transaction() as tx:
        assert tx.api_token_by_hash("h" * 64) == record
        assert tx.revoke_api_token("tok_1", now) is True
        assert tx.revoke_api_token("tok_1", now) is False
        assert tx.revoke_api_token("tok_missing", now) is False
    with store.read() as tx:
        (stored,) = tx.list_api_tokens()
        assert stored.revoked_at is not None and stored.roles == ("admin", "owner:team-a")


def test_migrate_is_idempotent(store: Store) -> None:
    store.migrate()
    store.migrate()
    with store.read() as tx:
        assert tx.audit_head() == (0, "0" * 64)


@pytest.mark.parametrize(
    "store_url", ["sqlite", pytest.param("postgresql", marks=pytest.mark.service)], indirect=True
)
def test_the_audit_table_has_a_column_for_each_record_field_in_order(store: Store) -> None:
    """The row mapping is derived from `AuditRecord`'s fields: the table (as migrated)
    must have exactly those columns, in that order (the SQL stores; memory keeps records)."""
    engine = store.engine  # type: ignore[attr-defined]
    columns = [c["name"] for c in sa.inspect(engine).get_columns("audit_log")]
    assert columns == list(AUDIT_RECORD_FIELDS)
