"""Tasks, leases, seen jti and join tokens: the same contract on memory, SQLite, PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.store.test_store_contract import _identity
from tether.model import Lease, LeaseState, Placement, Task, TaskStatus
from tether.store import (
    JoinTokenRecord,
    LeaseFilter,
    Store,
    StoreError,
    SuspectLeases,
    TaskFilter,
)

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)


def _lease(lease_id: str, **kw: object) -> Lease:
    fields: dict[str, object] = {
        "id": lease_id,
        "identity_id": "svc",
        "owner_id": "team-a",
        "provider": "token",
        "issued_at": T0,
        "expires_at": T0 + dt.timedelta(minutes=15),
        "state": LeaseState.ACTIVE,
        "scopes": ("read", "list"),
    }
    fields.update(kw)
    return Lease(**fields)  # type: ignore[arg-type]


def _task(task_id: str, **kw: object) -> Task:
    fields: dict[str, object] = {
        "id": task_id,
        "identity_id": "svc",
        "name": "deploy",
        "status": TaskStatus.ACTIVE,
        "created_at": T0,
        "deadline": T0 + dt.timedelta(hours=1),
        "claims": {"ref": "main"},
    }
    fields.update(kw)
    return Task(**fields)  # type: ignore[arg-type]


def test_tasks_round_trip_and_due_by_deadline_or_attestation(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_task(_task("t1"))
        tx.put_task(
            _task(
                "t2", attestation_expires_at=T0 + dt.timedelta(minutes=5), run_key="gh|acme/x|1|1"
            )
        )
        tx.put_task(_task("t3", status=TaskStatus.ENDED, deadline=T0))
    with store.read() as tx:
        assert tx.get_task("t1") == _task("t1")
        assert [t.id for t in tx.tasks_due(T0 + dt.timedelta(minutes=10), 10)] == ["t2"]
        assert [t.id for t in tx.tasks_due(T0 + dt.timedelta(hours=2), 10)] == ["t2", "t1"]
        run = tx.active_task_for_run("svc", "gh|acme/x|1|1")
        assert run is not None and run.id == "t2"
        assert tx.active_task_for_run("svc", "gh|acme/x|1|2") is None
        assert [t.id for t in tx.list_tasks(TaskFilter(status="active"))] == ["t1", "t2"]


def test_leases_insert_find_and_token_hash_lookup(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_leases(
            [
                _lease("a", task_id="t1", token_hash="h" * 64),
                _lease("b", task_id="t1", parent_id="a"),
                _lease("c", identity_id="other", owner_id="team-b"),
            ]
        )
    with pytest.raises(StoreError), store.transaction() as tx:
        tx.insert_leases([_lease("d", token_hash="h" * 64)])
    with store.read() as tx:
        assert tx.get_lease("a") == _lease("a", task_id="t1", token_hash="h" * 64)
        assert tx.lease_by_token_hash("h" * 64) == tx.get_lease("a")
        assert tx.get_lease("d") is None
        assert [x.id for x in tx.find_leases(LeaseFilter(task_id="t1"))] == ["a", "b"]
        assert [x.id for x in tx.find_leases(LeaseFilter(parent_ids=("a",)))] == ["b"]
        assert [x.id for x in tx.find_leases(LeaseFilter(owner_id="team-b"))] == ["c"]
        assert [x.id for x in tx.find_leases(LeaseFilter(limit=2))] == ["a", "b"]
        assert [x.id for x in tx.find_leases(LeaseFilter(after_id="b"))] == ["c"]


def test_suspect_leases_are_only_those_a_rule_can_flag(store: Store) -> None:
    """Governance reads the revoking, the old and the long-chained leases of an
    identity, not every fresh one it holds."""
    old = T0 - dt.timedelta(days=40)
    with store.transaction() as tx:
        tx.insert_leases(
            [
                _lease("fresh"),
                _lease("fresh-two-hops", delegation=("spiffe://a", "spiffe://b")),
                _lease("old", issued_at=old),
                _lease("revoking", state=LeaseState.REVOKING),
                _lease("three-hops", delegation=("spiffe://a", "spiffe://b", "spiffe://c")),
                _lease("other-old", identity_id="other", issued_at=old),
                _lease("ended-old", issued_at=old, state=LeaseState.REVOKED),
            ]
        )
    suspect = SuspectLeases(issued_before=T0 - dt.timedelta(days=30), chain=3)
    live_or_revoking = (LeaseState.PENDING, LeaseState.ACTIVE, LeaseState.REVOKING)
    with store.read() as tx:
        found = tx.find_leases(LeaseFilter(states=live_or_revoking, suspect=suspect))
        assert [x.id for x in found] == ["old", "other-old", "revoking", "three-hops"]
        mine = LeaseFilter(states=live_or_revoking, identity_ids=("svc",), suspect=suspect)
        assert [x.id for x in tx.find_leases(mine)] == ["old", "revoking", "three-hops"]
        assert [x.id for x in tx.find_leases(LeaseFilter(identity_ids=("other", "none")))] == [
            "other-old"
        ]
        one_hop = LeaseFilter(suspect=SuspectLeases(issued_before=old, chain=1))
        assert [x.id for x in tx.find_leases(one_hop)] == [
            "fresh-two-hops",
            "old",
            "other-old",
            "three-hops",
        ]


def test_a_keyed_hash_set_on_activation_is_found(store: Store) -> None:
    """A target lease gets its password's keyed hash once the password exists."""
    with store.transaction() as tx:
        tx.insert_leases([_lease("p", state=LeaseState.PENDING)])
    with store.transaction() as tx:
        tx.put_lease(_lease("p", token_hash="k" * 64))
    with store.read() as tx:
        assert tx.lease_by_token_hash("k" * 64) == _lease("p", token_hash="k" * 64)


def test_join_tokens_by_hash_used_or_not(store: Store) -> None:
    record = JoinTokenRecord(
        id="jt1",
        token_hash="j" * 64,
        identity_id="svc",
        created_at=T0,
        expires_at=T0 + dt.timedelta(hours=1),
        created_by="admin",
    )
    with store.transaction() as tx:
        tx.put_join_token(record)
    with store.read() as tx:
        assert tx.join_token_by_hash("j" * 64) == record
        assert tx.join_token_by_hash("x" * 64) is None
    with store.transaction() as tx:
        assert tx.consume_join_token("j" * 64, T0) is not None
    with store.read() as tx:
        used = tx.join_token_by_hash("j" * 64)
        assert used is not None and used.used_at == T0


def test_end_leases_moves_only_live_ones_and_keeps_the_first_reason(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_leases([_lease(f"l{i}") for i in range(5)])
    later = T0 + dt.timedelta(minutes=1)
    with store.transaction() as tx:
        moved = tx.end_leases(["l0", "l1", "missing"], LeaseState.REVOKED, later, "task ended")
        assert sorted(x.id for x in moved) == ["l0", "l1"]
        assert all(x.state is LeaseState.REVOKED and x.ended_at == later for x in moved)
        assert tx.end_leases(["l0"], LeaseState.EXPIRED, later, "again") == []
        revoking = tx.end_leases(["l2"], LeaseState.REVOKING, later, "db down")
        assert revoking[0].state is LeaseState.REVOKING and revoking[0].next_attempt_at == later
        confirmed = tx.end_leases(["l2"], LeaseState.REVOKED, later, "confirmed")
        assert confirmed[0].end_reason == "db down"
    with store.read() as tx:
        assert tx.count_leases(LeaseState.REVOKED) == 3
        assert tx.count_leases(LeaseState.ACTIVE) == 2
        assert [x.id for x in tx.find_leases(LeaseFilter())] == ["l3", "l4"]


def test_many_leases_end_in_one_call(store: Store) -> None:
    ids = [f"bulk-{i:05d}" for i in range(4500)]
    with store.transaction() as tx:
        tx.insert_leases([_lease(i) for i in ids])
    with store.transaction() as tx:
        assert len(tx.end_leases(ids, LeaseState.REVOKED, T0, "bulk")) == 4500


def test_due_and_retry_queues(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_leases(
            [
                _lease("early", expires_at=T0 + dt.timedelta(minutes=1)),
                _lease("late", expires_at=T0 + dt.timedelta(hours=1)),
                _lease("stuck", state=LeaseState.REVOKING, next_attempt_at=T0),
                _lease(
                    "backing-off",
                    state=LeaseState.REVOKING,
                    next_attempt_at=T0 + dt.timedelta(hours=1),
                ),
            ]
        )
    with store.transaction() as tx:
        assert [x.id for x in tx.leases_due(T0 + dt.timedelta(minutes=2), 10)] == ["early"]
        assert [x.id for x in tx.leases_to_retry(T0, 10)] == ["stuck"]
        tx.put_lease(
            _lease(
                "stuck",
                state=LeaseState.REVOKING,
                revoke_attempts=3,
                next_attempt_at=T0 + dt.timedelta(minutes=8),
            )
        )
    with store.read() as tx:
        stuck = tx.get_lease("stuck")
        assert stuck is not None and stuck.revoke_attempts == 3
        assert tx.leases_to_retry(T0, 10) == []


def test_unjustified_identities_hold_live_leases(store: Store) -> None:
    spec = _identity
    with store.transaction() as tx:
        tx.put_estate_object("owner", "team-a", {"id": "team-a", "contact": "a@example.com"})
        tx.put_estate_object("vendor", "acme", {"id": "acme", "contract_ends": "2099-01-01"})
        tx.put_identity(spec("fine", approval={"by": "x", "expires": "2099-01-01"}))
        tx.put_identity(spec("lapsed", approval={"by": "x", "expires": "2026-01-01"}))
        tx.put_identity(spec("retired", status="retired"))
        tx.put_identity(spec("vendored", vendor="acme"))
        tx.put_identity(spec("retired-no-leases", status="retired"))
        tx.insert_leases(
            [_lease(f"l-{i}", identity_id=i) for i in ("fine", "lapsed", "retired", "vendored")]
        )
    with store.read() as tx:
        found = [s["id"] for s in tx.unjustified_identities(T0, [], 10)]
        assert found == ["lapsed", "retired"]
        with_vendor = [s["id"] for s in tx.unjustified_identities(T0, ["acme"], 10)]
        assert with_vendor == ["lapsed", "retired", "vendored"]


def test_the_prefilter_names_identities_with_a_removed_owner_or_vendor_or_a_moved_lease(
    store: Store,
) -> None:
    def spec(identity_id: str, **extra: object) -> dict[str, object]:
        return _identity(identity_id, **{"region": "eu-west-1", **extra})

    here = Placement("team-a", "prod", "eu-west-1")
    with store.transaction() as tx:
        tx.put_estate_object("owner", "team-a", {"id": "team-a", "contact": "a@example.com"})
        for identity_id, extra in [
            ("fine", {}),
            ("orphaned", {"owner": "gone"}),
            ("unknown-vendor", {"vendor": "gone"}),
            ("moving", {}),
            ("stays", {}),
        ]:
            tx.put_identity(spec(identity_id, **extra))
        tx.insert_leases(
            [
                _lease("l-fine", identity_id="fine", placement=here),
                _lease("l-orphaned", identity_id="orphaned", placement=here),
                _lease("l-unknown-vendor", identity_id="unknown-vendor"),
                _lease("l-moving", identity_id="moving", placement=here),
                _lease("l-stays", identity_id="stays", placement=here),
            ]
        )
    with store.read() as tx:
        assert [s["id"] for s in tx.unjustified_identities(T0, [], 10)] == [
            "orphaned",
            "unknown-vendor",
        ]
    with store.transaction() as tx:
        tx.put_identity(spec("moving", region="us-east-1"))
        tx.put_identity(spec("stays", purpose="changed, placement kept"))
    with store.read() as tx:
        assert [s["id"] for s in tx.unjustified_identities(T0, [], 10)] == [
            "moving",
            "orphaned",
            "unknown-vendor",
        ]
        moved = tx.get_lease("l-moving")
        assert moved is not None and moved.placement == here


def test_jti_is_remembered_once_and_forgotten_after_expiry(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.remember_jti("https://idp", "j1", T0) is True
    with store.transaction() as tx:
        assert tx.remember_jti("https://idp", "j1", T0) is False
        assert tx.remember_jti("https://other", "j1", T0) is True
    with store.transaction() as tx:
        assert tx.forget_jti_before(T0) == 2
        assert tx.remember_jti("https://idp", "j1", T0) is True


def test_join_tokens_work_once_and_not_after_expiry(store: Store) -> None:
    record = JoinTokenRecord("jt_1", "k" * 64, "host-a", T0, T0 + dt.timedelta(hours=1), "admin")
    expired = JoinTokenRecord("jt_2", "e" * 64, "host-a", T0, T0, "admin")
    with store.transaction() as tx:
        tx.put_join_token(record)
        tx.put_join_token(expired)
    with store.transaction() as tx:
        used = tx.consume_join_token("k" * 64, T0 + dt.timedelta(minutes=1))
        assert used is not None and used.identity_id == "host-a" and used.used_at is not None
        assert tx.consume_join_token("k" * 64, T0 + dt.timedelta(minutes=2)) is None
        assert tx.consume_join_token("e" * 64, T0 + dt.timedelta(minutes=1)) is None
        assert tx.consume_join_token("unknown", T0) is None
