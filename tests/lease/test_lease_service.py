"""Revocation cascades and completes (invariant 2), on every storage backend."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest

from tether._internal.timeutil import utcnow
from tether.audit import AuditLog, verify_chain
from tether.lease import LeaseService, RevokeTarget, backoff
from tether.model import Identity, Lease, LeaseState, Profile, Task, TaskStatus
from tether.providers import IssuedCredential, ProviderError
from tether.store import LeaseFilter, Store


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> dt.datetime:
        return self.now


class LocalProvider:
    name, external = "token", False

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        raise NotImplementedError

    def revoke(self, lease: Lease) -> None:
        return None


class FlakyTarget:
    """A target system that is down for its first `failures` revocation attempts."""

    name, external = "flaky", True

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.revoked: list[str] = []

    def issue(self, lease: Lease, identity: Identity, profile: Profile | None) -> IssuedCredential:
        raise NotImplementedError

    def revoke(self, lease: Lease) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ProviderError("target unreachable")
        self.revoked.append(lease.id)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def flaky() -> FlakyTarget:
    return FlakyTarget(failures=3)


@pytest.fixture
def service(store: Store, clock: Clock, flaky: FlakyTarget) -> LeaseService:
    key = os.urandom(32)
    return LeaseService(
        store, AuditLog(lambda: key), {"token": LocalProvider(), "flaky": flaky}, clock=clock
    )


def _lease(lease_id: str, clock: Clock, **kw: object) -> Lease:
    fields: dict[str, object] = {
        "id": lease_id,
        "identity_id": "svc",
        "owner_id": "team-a",
        "provider": "token",
        "issued_at": clock.now,
        "expires_at": clock.now + dt.timedelta(minutes=10),
        "state": LeaseState.ACTIVE,
        "task_id": "t1",
    }
    fields.update(kw)
    return Lease(**fields)  # type: ignore[arg-type]


def _states(store: Store) -> dict[str, str]:
    with store.read() as tx:
        leases = tx.find_leases(LeaseFilter(states=tuple(LeaseState), limit=10_000))
    return {lease.id: lease.state.value for lease in leases}


def test_revoking_a_lease_revokes_its_derived_leases_and_nothing_else(
    store: Store, service: LeaseService, clock: Clock
) -> None:
    with store.transaction() as tx:
        tx.insert_leases(
            [
                _lease("root", clock),
                _lease("child", clock, parent_id="root"),
                _lease("grandchild", clock, parent_id="child"),
                _lease("sibling", clock),
                _lease("other-task", clock, task_id="t2"),
            ]
        )
    assert service.revoke(RevokeTarget(lease_id="root"), "leaked", "test") == 3
    assert _states(store) == {
        "root": "revoked",
        "child": "revoked",
        "grandchild": "revoked",
        "sibling": "active",
        "other-task": "active",
    }
    assert service.revoke(RevokeTarget(task_id="t1"), "task ended", "test") == 1
    assert service.revoke(RevokeTarget(everything=True), "kill switch", "test") == 1
    assert set(_states(store).values()) == {"revoked"}
    with store.read() as tx:
        entries = tx.list_audit(0, 100)
    revoked = [json.loads(e.details)["lease_id"] for e in entries if e.action == "lease.revoke"]
    assert sorted(revoked) == ["child", "grandchild", "other-task", "root", "sibling"]
    assert {e.reason for e in entries} == {"leaked", "task ended", "kill switch"}
    with store.read() as tx:
        assert verify_chain(store.iter_audit(), expected_head=tx.audit_head()).ok


def test_ending_a_task_ends_it_and_its_leases_once(
    store: Store, service: LeaseService, clock: Clock
) -> None:
    task = Task("t1", "svc", "deploy", TaskStatus.ACTIVE, clock.now, clock.now)
    with store.transaction() as tx:
        tx.put_task(task)
        tx.insert_leases([_lease(f"l{i}", clock) for i in range(3)])
    assert service.end_task(task, "task ended", "test") == 3
    assert service.end_task(task, "task ended", "test") == 0
    with store.read() as tx:
        ended = tx.get_task("t1")
    assert ended is not None and ended.status is TaskStatus.ENDED


def test_expiry_and_due_tasks(store: Store, service: LeaseService, clock: Clock) -> None:
    with store.transaction() as tx:
        tx.put_task(
            Task(
                "t1",
                "svc",
                "deploy",
                TaskStatus.ACTIVE,
                clock.now,
                clock.now + dt.timedelta(minutes=30),
            )
        )
        tx.insert_leases(
            [
                _lease(
                    "short", clock, expires_at=clock.now + dt.timedelta(seconds=5), task_id=None
                ),
                _lease("in-task", clock),
            ]
        )
    assert service.expire_due() == 0
    clock.now += dt.timedelta(seconds=6)
    assert service.expire_due() == 1
    assert _states(store)["short"] == "expired"
    clock.now += dt.timedelta(minutes=30)
    assert service.end_due_tasks() == 1
    assert _states(store)["in-task"] == "revoked"


def test_a_failed_external_revocation_stays_visible_and_is_retried_until_confirmed(
    store: Store, service: LeaseService, clock: Clock, flaky: FlakyTarget
) -> None:
    with store.transaction() as tx:
        tx.insert_leases([_lease("db-role", clock, provider="flaky")])
    service.revoke(RevokeTarget(lease_id="db-role"), "task ended", "test")
    assert _states(store) == {"db-role": "revoking"}
    for attempt in (1, 2, 3):
        assert service.retry_revocations() == 0
        with store.read() as tx:
            lease = tx.get_lease("db-role")
        assert lease is not None and lease.state is LeaseState.REVOKING
        assert lease.revoke_attempts == attempt
        assert service.retry_revocations() == 0  # backing off: not yet due
        clock.now = lease.next_attempt_at or clock.now
    assert service.retry_revocations() == 1
    assert _states(store) == {"db-role": "revoked"} and flaky.revoked == ["db-role"]
    with store.read() as tx:
        confirmed = [e for e in tx.list_audit(0, 100) if e.action == "lease.revoke.confirmed"]
    assert len(confirmed) == 1


def test_backoff_grows_and_is_capped() -> None:
    assert backoff(1) < backoff(2) < backoff(5)
    assert backoff(100) == dt.timedelta(minutes=5)


def test_each_failed_revocation_raises_an_alert(
    store: Store, service: LeaseService, clock: Clock, flaky: FlakyTarget
) -> None:
    raised: list[str] = []
    service.on_alert.append(raised.append)
    with store.transaction() as tx:
        tx.insert_leases([_lease("db-role", clock, provider="flaky", target="payments-db")])
    service.revoke(RevokeTarget(lease_id="db-role"), "task ended", "test")
    service.retry_revocations()
    with store.read() as tx:
        alerts = tx.list_audit(0, 100, action_prefix="alert.")
    assert [a.action for a in alerts] == ["alert.revocation_failed"]
    assert json.loads(alerts[0].details)["target"] == "payments-db"
    assert alerts[0].reason == "target unreachable" and raised == ["revocation_failed"]
