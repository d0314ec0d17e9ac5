"""The audit chain over every store backend: HMACed secrets, tamper evidence, offline proof."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import itertools
import json
import os
import secrets
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tether.audit import (
    GENESIS_HASH,
    AuditLog,
    AuditUnavailable,
    jsonl_line,
    read_jsonl,
    record_to_json,
    verify_chain,
    write_jsonl,
)
from tether.audit._chain import HASHED_FIELDS, record_hash
from tether.barrier import Barrier
from tether.model import AUDIT_OPTIONAL_FIELDS, AUDIT_RECORD_FIELDS, AuditEvent, AuditRecord
from tether.store import Store
from tether.store._memory import MemoryStore

EVENTS = 8
TEXT_COLUMNS = [name for name in AUDIT_RECORD_FIELDS if name not in ("seq", "ts")]


@pytest.fixture
def audit_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def audit(audit_key: bytes) -> AuditLog:
    return AuditLog(lambda: audit_key)


@pytest.fixture
def sensitive_values() -> list[str]:
    return [secrets.token_urlsafe(32) for _ in range(3)]


@pytest.fixture
def chain(store: Store, audit: AuditLog, sensitive_values: list[str]) -> tuple[int, str]:
    """Eight entries over four transactions; returns the head an auditor would keep."""
    with store.transaction() as tx:
        audit.append(
            tx, [AuditEvent(action="sys.init", actor="init", details={"shares": 5, "threshold": 3})]
        )
    with store.transaction() as tx:
        audit.append(
            tx,
            [
                AuditEvent(
                    action="lease.issue",
                    actor="token:tok_1(ci)",
                    identity_id="nhi-00001",
                    owner_id="team-a",
                    task_id="task-9",
                    justification="CHG-1001",
                    details={"lease": "l-1", "ttl": 900},
                    sensitive={"credential": sensitive_values[0]},
                ),
                AuditEvent(
                    action="policy.decide",
                    actor="engine",
                    result="deny",
                    identity_id="nhi-00002",
                    reason="approval expired",
                    details={"policies": ["p-1", "p-2"]},
                ),
                AuditEvent(
                    action="token.create",
                    actor="token:tok_0(root)",
                    details={"name": "ops", "note": "ünïcode ✓"},
                    sensitive={"token": sensitive_values[1], "password": sensitive_values[2]},
                ),
            ],
        )
    for i in range(5, EVENTS + 1):
        with store.transaction() as tx:
            audit.append(tx, [AuditEvent(action="estate.apply", actor="cli", details={"n": i})])
    return _head(store)


def _head(store: Store) -> tuple[int, str]:
    with store.read() as tx:
        return tx.audit_head()


def _records(store: Store) -> list[AuditRecord]:
    return list(store.iter_audit())


class Tamper:
    """What an attacker with write access to the database can do to the audit table."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine: sa.Engine | None = getattr(store, "engine", None)
        if self.engine is None:
            assert isinstance(store, MemoryStore)
            # The memory store's audit rows, edited in place: its "database file".
            self.rows: list[AuditRecord] = store._state.audit

    def _put(self, index: int, record: AuditRecord | None) -> None:
        """Overwrite (or, with None, delete) a memory-store row behind the store's back."""
        if record is None:
            del self.rows[index]
        else:
            self.rows[index] = record

    def _sql(self, *statements: tuple[str, dict[str, Any]]) -> None:
        assert self.engine is not None
        with self.engine.begin() as conn:
            for text, params in statements:
                conn.execute(sa.text(text), params)

    def set_column(self, seq: int, column: str, value: str | None) -> None:
        assert column in TEXT_COLUMNS
        if self.engine is not None:
            self._sql(
                (f"UPDATE audit_log SET {column} = :v WHERE seq = :s", {"v": value, "s": seq})
            )
        else:
            record = _records(self.store)[seq - 1]
            self._put(seq - 1, dataclasses.replace(record, **{column: value}))

    def delete(self, seq: int) -> None:
        if self.engine is not None:
            self._sql(("DELETE FROM audit_log WHERE seq = :s", {"s": seq}))
        else:
            self._put(seq - 1, None)

    def truncate_after(self, seq: int) -> None:
        if self.engine is not None:
            self._sql(("DELETE FROM audit_log WHERE seq > :s", {"s": seq}))
        else:
            for index in reversed(range(seq, len(_records(self.store)))):
                self._put(index, None)

    def swap(self, a: int, b: int) -> None:
        """Exchange the contents of two rows, each keeping its sequence number."""
        if self.engine is not None:
            self._sql(
                ("UPDATE audit_log SET seq = -1 WHERE seq = :a", {"a": a}),
                ("UPDATE audit_log SET seq = :a WHERE seq = :b", {"a": a, "b": b}),
                ("UPDATE audit_log SET seq = :b WHERE seq = -1", {"b": b}),
            )
        else:
            records = _records(self.store)
            ra, rb = records[a - 1], records[b - 1]
            self._put(a - 1, dataclasses.replace(rb, seq=a))
            self._put(b - 1, dataclasses.replace(ra, seq=b))

    def insert(self, seq: int, action: str) -> None:
        """Insert a well-formed forged entry at `seq`, linked to its predecessor and hashed
        correctly, moving every later entry up by one, as a careful attacker would."""
        records = _records(self.store)
        before, template = records[seq - 2], records[seq - 1]
        forged = dataclasses.replace(template, seq=seq, action=action, prev_hash=before.hash)
        forged = dataclasses.replace(forged, hash=record_hash(forged))
        if self.engine is not None:
            self._sql(
                ("UPDATE audit_log SET seq = -seq WHERE seq >= :s", {"s": seq}),
                ("UPDATE audit_log SET seq = 1 - seq WHERE seq < 0", {}),
                self._copy_row(forged, from_seq=seq + 1),
            )
        else:
            shifted = [dataclasses.replace(r, seq=r.seq + 1) for r in records[seq - 1 :]]
            for index, record in enumerate([forged, *shifted[:-1]], start=seq - 1):
                self._put(index, record)
            with self.store.transaction() as tx:
                tx.append_audit([shifted[-1]])

    def append(self, action: str) -> AuditRecord:
        """Append a well-formed forged entry after the last one, leaving the head alone."""
        last = _records(self.store)[-1]
        forged = dataclasses.replace(last, seq=last.seq + 1, action=action, prev_hash=last.hash)
        forged = dataclasses.replace(forged, hash=record_hash(forged))
        if self.engine is not None:
            self._sql(self._copy_row(forged, from_seq=last.seq))
        else:
            with self.store.transaction() as tx:
                tx.append_audit([forged])
        return forged

    @staticmethod
    def _copy_row(record: AuditRecord, from_seq: int) -> tuple[str, dict[str, Any]]:
        # The timestamp is copied in SQL from a row that has the same one, so no driver
        # conversion differs between what the forger hashed and what is stored.
        columns = TEXT_COLUMNS
        values = {c: getattr(record, c) for c in columns}
        text = (
            f"INSERT INTO audit_log (seq, ts, {', '.join(columns)}) "
            f"SELECT :seq, ts, {', '.join(':' + c for c in columns)} "
            "FROM audit_log WHERE seq = :from_seq"
        )
        return text, {"seq": record.seq, "from_seq": from_seq, **values}


@pytest.fixture
def tamper(store: Store) -> Tamper:
    return Tamper(store)


def _persisted_text(store: Store) -> str:
    """Everything stored, as someone reading the database (or its file) would see it."""
    engine = getattr(store, "engine", None)
    if engine is None:
        return "\n".join(repr(r) for r in _records(store))
    chunks = []
    with engine.connect() as conn:
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                chunks.append(repr(tuple(row)))
    if engine.dialect.name == "sqlite":
        path = Path(engine.url.database or "")
        for candidate in (path, Path(f"{path}-wal")):
            if candidate.exists():
                chunks.append(candidate.read_bytes().decode("latin-1"))
    return "\n".join(chunks)


# -- a sound chain --


def test_an_empty_log_verifies(store: Store) -> None:
    result = verify_chain(store.iter_audit(), expected_head=_head(store))
    assert result.ok
    assert result.entries == 0
    assert result.head_hash == GENESIS_HASH


def test_an_untouched_chain_verifies(store: Store, chain: tuple[int, str]) -> None:
    assert chain[0] == EVENTS
    result = verify_chain(store.iter_audit(), expected_head=chain)
    assert result.ok, result.problem
    assert result.entries == EVENTS
    assert result.head_hash == chain[1]
    assert result.first_bad_seq is None
    # Streaming in small batches reads the same chain.
    assert verify_chain(store.iter_audit(batch=3), expected_head=chain).ok


def test_entries_are_sequenced_and_linked(store: Store, chain: tuple[int, str]) -> None:
    records = _records(store)
    assert [r.seq for r in records] == list(range(1, EVENTS + 1))
    assert records[0].prev_hash == GENESIS_HASH
    for previous, record in itertools.pairwise(records):
        assert record.prev_hash == previous.hash
    issue = records[1]
    assert (issue.action, issue.identity_id, issue.owner_id, issue.task_id) == (
        "lease.issue",
        "nhi-00001",
        "team-a",
        "task-9",
    )
    assert issue.justification == "CHG-1001"
    assert records[2].result == "deny"
    assert records[2].reason == "approval expired"
    assert json.loads(records[3].details)["note"] == "ünïcode ✓"


def test_appending_nothing_writes_nothing(
    store: Store, audit: AuditLog, chain: tuple[int, str]
) -> None:
    with store.transaction() as tx:
        assert audit.append(tx, []) == []
    assert _head(store) == chain


# -- sensitive values --


def test_sensitive_values_are_stored_only_as_their_hmac(
    store: Store,
    audit: AuditLog,
    audit_key: bytes,
    sensitive_values: list[str],
    chain: tuple[int, str],
) -> None:
    records = _records(store)
    issue = json.loads(records[1].details)
    created = json.loads(records[3].details)
    assert issue == {
        "lease": "l-1",
        "ttl": 900,
        "credential": audit.fingerprint(sensitive_values[0]),
    }
    assert created["token"] == audit.fingerprint(sensitive_values[1])
    assert created["password"] == audit.fingerprint(sensitive_values[2])

    # An auditor holding the key and a candidate value can prove it was there.
    expected = hmac.new(audit_key, sensitive_values[0].encode(), hashlib.sha256).hexdigest()
    assert issue["credential"] == f"hmac-sha256:{expected}"
    # Without the key, the fingerprint is not the plain hash of the value.
    assert hashlib.sha256(sensitive_values[0].encode()).hexdigest() not in issue["credential"]
    other_key = os.urandom(32)
    assert AuditLog(lambda: other_key).fingerprint(sensitive_values[0]) != issue["credential"]

    stored = _persisted_text(store)
    for value in sensitive_values:
        assert value not in stored
        assert all(value not in repr(r) for r in records)
    assert expected in stored


# -- tampering --


def _assert_broken(store: Store, head: tuple[int, str], first_bad: int, words: str) -> None:
    result = verify_chain(store.iter_audit(), expected_head=head)
    assert not result.ok
    assert result.first_bad_seq == first_bad, result.problem
    assert result.problem is not None
    assert words in result.problem
    # The same finding from the head the store itself keeps, as `tether audit verify` does.
    assert not verify_chain(store.iter_audit(), expected_head=_head(store)).ok


@pytest.mark.parametrize("seq", [1, 4, EVENTS])
def test_an_edited_row_is_named(
    store: Store, chain: tuple[int, str], tamper: Tamper, seq: int
) -> None:
    tamper.set_column(seq, "details", json.dumps({"n": 999}))
    _assert_broken(store, chain, seq, "modified")


def test_an_edit_to_any_column_is_detected(
    store: Store, chain: tuple[int, str], tamper: Tamper
) -> None:
    original = _records(store)[4]
    for column in TEXT_COLUMNS:
        value = getattr(original, column)
        forged = "0" * 64 if column in ("hash", "prev_hash") else "forged"
        tamper.set_column(5, column, forged)
        result = verify_chain(store.iter_audit(), expected_head=chain)
        assert not result.ok, column
        assert result.first_bad_seq == 5, (column, result.problem)
        tamper.set_column(5, column, value)
        assert verify_chain(store.iter_audit(), expected_head=chain).ok, column


def test_an_edited_and_rehashed_row_breaks_the_next_link(
    store: Store, chain: tuple[int, str], tamper: Tamper
) -> None:
    edited = dataclasses.replace(_records(store)[3], details='{"n":999}')
    tamper.set_column(4, "details", edited.details)
    tamper.set_column(4, "hash", record_hash(edited))
    _assert_broken(store, chain, 5, "does not link")


@pytest.mark.parametrize("seq", [1, 4, EVENTS - 1])
def test_a_deleted_row_is_named(
    store: Store, chain: tuple[int, str], tamper: Tamper, seq: int
) -> None:
    tamper.delete(seq)
    _assert_broken(store, chain, seq, "out of sequence")


@pytest.mark.parametrize("seq", [2, 4, EVENTS])
def test_an_inserted_row_is_detected_at_the_first_entry_it_displaced(
    store: Store, chain: tuple[int, str], tamper: Tamper, seq: int
) -> None:
    tamper.insert(seq, action="token.create")
    records = _records(store)
    assert len(records) == EVENTS + 1
    assert records[seq - 1].action == "token.create"
    # The forgery itself is well formed; the genuine entry after it no longer links.
    _assert_broken(store, chain, seq + 1, "does not link")


def test_a_row_appended_past_the_head_is_named(
    store: Store, chain: tuple[int, str], tamper: Tamper
) -> None:
    forged = tamper.append(action="lease.revoke")
    assert forged.seq == EVENTS + 1
    result = verify_chain(store.iter_audit(), expected_head=chain)
    assert not result.ok
    assert result.first_bad_seq == EVENTS + 1, result.problem
    assert result.problem is not None
    assert "past the log head" in result.problem


def test_a_consistently_rewritten_tail_is_caught_by_the_kept_head(
    store: Store, chain: tuple[int, str]
) -> None:
    # An attacker who edits entry 4 and recomputes every hash after it leaves a chain
    # that is sound on its own: only the head the auditor kept tells the difference.
    records = _records(store)
    rewritten = records[:3]
    for record in records[3:]:
        forged = dataclasses.replace(record, prev_hash=rewritten[-1].hash)
        if record.seq == 4:
            forged = dataclasses.replace(forged, details='{"name":"nobody"}')
        rewritten.append(dataclasses.replace(forged, hash=record_hash(forged)))
    assert verify_chain(rewritten).ok
    result = verify_chain(rewritten, expected_head=chain)
    assert not result.ok
    assert result.first_bad_seq == EVENTS
    assert result.problem is not None
    assert "disagrees" in result.problem


@pytest.mark.parametrize(("a", "b"), [(3, 4), (1, 2), (2, 7), (1, EVENTS)])
def test_reordered_rows_are_named(
    store: Store, chain: tuple[int, str], tamper: Tamper, a: int, b: int
) -> None:
    before = _records(store)
    tamper.swap(a, b)
    after = _records(store)
    assert [r.seq for r in after] == [r.seq for r in before]
    assert after[a - 1].hash == before[b - 1].hash
    _assert_broken(store, chain, a, "does not link")


@pytest.mark.parametrize("keep", [0, 1, EVENTS - 2, EVENTS - 1])
def test_a_truncated_tail_disagrees_with_the_head(
    store: Store, chain: tuple[int, str], tamper: Tamper, keep: int
) -> None:
    tamper.truncate_after(keep)
    assert len(_records(store)) == keep
    result = verify_chain(store.iter_audit(), expected_head=chain)
    assert not result.ok
    assert result.entries == keep
    assert result.first_bad_seq == keep + 1
    assert result.problem is not None
    assert "truncated" in result.problem
    # Without a head to compare against, a cleanly cut tail is indistinguishable.
    assert verify_chain(store.iter_audit()).ok


# -- offline verification --


def test_export_verifies_offline_and_catches_tampering_in_the_file(
    store: Store, chain: tuple[int, str], tmp_path: Path, sensitive_values: list[str]
) -> None:
    export = tmp_path / "audit.jsonl"
    with export.open("w", encoding="utf-8") as out:
        assert write_jsonl(store.iter_audit(), out) == EVENTS
    text = export.read_text(encoding="utf-8")
    assert len(text.splitlines()) == EVENTS
    for value in sensitive_values:
        assert value not in text

    with export.open(encoding="utf-8") as lines:
        result = verify_chain(read_jsonl(lines), expected_head=chain)
    assert result.ok, result.problem
    assert result.entries == EVENTS
    assert [r.hash for r in read_jsonl(text.splitlines())] == [r.hash for r in _records(store)]

    lines_ = text.splitlines()
    doc = json.loads(lines_[5])
    doc["actor"] = "someone-else"
    edited = [*lines_[:5], json.dumps(doc), *lines_[6:]]
    assert verify_chain(read_jsonl(edited), expected_head=chain).first_bad_seq == 6
    dropped = lines_[:2] + lines_[3:]
    assert verify_chain(read_jsonl(dropped), expected_head=chain).first_bad_seq == 3


def test_read_jsonl_names_the_line_that_is_not_an_entry() -> None:
    with pytest.raises(ValueError, match="line 2"):
        list(read_jsonl(["", json.dumps({"seq": 1})]))
    with pytest.raises(ValueError, match="line 1"):
        list(read_jsonl(["not json"]))


# -- the log and the change it records commit together --


def test_a_rolled_back_transaction_leaves_no_audit_entry(
    store: Store, audit: AuditLog, chain: tuple[int, str]
) -> None:
    with pytest.raises(RuntimeError), store.transaction() as tx:
        audit.append(tx, [AuditEvent(action="lease.issue", actor="x", details={"lost": True})])
        tx.put_estate_object("owner", "team-z", {"id": "team-z"})
        raise RuntimeError("the operation failed after writing its evidence")
    assert _head(store) == chain
    assert len(_records(store)) == EVENTS
    with store.read() as tx:
        assert tx.estate_objects("owner") == {}
    with store.transaction() as tx:
        (record,) = audit.append(tx, [AuditEvent(action="after", actor="x")])
    assert record.seq == EVENTS + 1
    assert record.prev_hash == chain[1]
    assert verify_chain(store.iter_audit(), expected_head=_head(store)).ok


def test_when_the_audit_key_is_unavailable_the_operation_does_not_happen(
    store: Store, chain: tuple[int, str], sensitive_values: list[str]
) -> None:
    sealed_audit = AuditLog(Barrier(store).audit_key)  # a sealed barrier has no audit key
    with pytest.raises(AuditUnavailable) as caught, store.transaction() as tx:
        tx.put_estate_object("owner", "team-z", {"id": "team-z"})
        sealed_audit.append(
            tx,
            [
                AuditEvent(
                    action="token.create",
                    actor="x",
                    sensitive={"token": sensitive_values[0]},
                )
            ],
        )
    assert sensitive_values[0] not in str(caught.value)
    assert _head(store) == chain
    assert len(_records(store)) == EVENTS
    with store.read() as tx:
        assert tx.estate_objects("owner") == {}
    assert verify_chain(store.iter_audit(), expected_head=_head(store)).ok


# -- one mapping of the record, each way --

_TS = dt.datetime(2027, 1, 31, 12, 0, 0, 123456, tzinfo=dt.UTC)


def _record(**changes: Any) -> AuditRecord:
    base = AuditRecord(
        seq=7,
        ts=_TS,
        action="lease.issue",
        actor="token:tok_1(ci)",
        result="ok",
        identity_id="nhi-1",
        owner_id="team-a",
        task_id=None,
        reason="because",
        justification="CHG-1",
        details='{"n":"ünï"}',
        prev_hash="0" * 64,
        hash="",
    )
    return dataclasses.replace(base, **changes)


def test_the_hash_covers_every_field_but_itself_predecessor_first() -> None:
    assert HASHED_FIELDS[0] == "prev_hash"
    assert sorted(HASHED_FIELDS) == sorted(set(AUDIT_RECORD_FIELDS) - {"hash"})


def test_hashes_are_the_ones_existing_chains_carry() -> None:
    """Known entries hash as they always have: a stored chain keeps verifying."""
    assert record_hash(_record()) == (
        "8b1951d76e79433cc7c756aec5a3fb687c7ee67080c7038e7af183dd40f5ace4"
    )
    bare = _record(
        seq=1,
        action="sys.init",
        actor="init",
        identity_id=None,
        owner_id=None,
        reason=None,
        justification=None,
        details="{}",
        prev_hash="a" * 64,
    )
    assert record_hash(bare) == "f445a17d39fee19efa709840f0b21c0f5b2082d2c8def5e0274d37b28e342cce"


def test_json_round_trips_every_field_and_only_optional_ones_may_be_absent() -> None:
    record = _record(hash="f" * 64)
    doc = record_to_json(record)
    assert list(doc) == list(AUDIT_RECORD_FIELDS)
    assert doc["ts"] == "2027-01-31T12:00:00.123456Z"
    assert read_jsonl([jsonl_line(record)]).__next__() == record
    for name in AUDIT_RECORD_FIELDS:
        partial = {k: v for k, v in doc.items() if k != name}
        if name in AUDIT_OPTIONAL_FIELDS:
            assert getattr(next(read_jsonl([json.dumps(partial)])), name) is None
        else:
            with pytest.raises(ValueError, match=f"line 1 is not an audit entry: '{name}'"):
                next(read_jsonl([json.dumps(partial)]))


def test_listing_and_streaming_read_back_the_same_records(
    store: Store, chain: tuple[int, str]
) -> None:
    """Both reads of every store map rows to records the one way (`list_audit` for the
    API's pages, `iter_audit` for verification and export)."""
    with store.read() as tx:
        listed = tx.list_audit(0, 100)
    assert listed == _records(store)
    assert {r.result for r in listed} == {"ok", "deny"}
    assert [r.justification for r in listed if r.justification] == ["CHG-1001"]
