"""Keys and access credentials live on separate paths: rotating a key touches no
lease, and ending a task (revoking its leases) touches no key."""

from __future__ import annotations

import datetime as dt

from tests.keys.conftest import World
from tether.model import Lease, LeaseState, Task, TaskStatus
from tether.store import LeaseFilter


def _snapshot_keys(world: World) -> tuple[object, ...]:
    with world.node.store.read() as tx:
        return (
            tx.estate_objects("key"),
            tx.get_sealed("key/dek/v1"),
            tx.get_sealed("key/dek/v2"),
            tx.key_usage("dek"),
        )


def test_rotating_a_key_touches_no_lease_and_ending_a_task_touches_no_key(
    world: World,
) -> None:
    now = world.clock.now
    task = Task(
        id="tsk_keys",
        identity_id="orders-api",
        name="deploy-1",
        status=TaskStatus.ACTIVE,
        created_at=now,
        deadline=now + dt.timedelta(minutes=30),
    )
    lease = Lease(
        id="lse_keys",
        identity_id="orders-api",
        owner_id="team-orders",
        provider="token",
        issued_at=now,
        expires_at=now + dt.timedelta(minutes=15),
        state=LeaseState.ACTIVE,
        task_id=task.id,
        token_hash="0" * 64,
    )
    with world.node.store.transaction() as tx:
        tx.put_task(task)
        tx.insert_leases([lease])

    world.make_key("dek", "aes256-gcm")
    user = type(world.user)("orders-api-run", "orders-api", attested=True, task_id=task.id)
    ciphertext = world.keys.encrypt(user, "dek", b"order data")
    world.keys.rotate(world.admin, "dek", "rekey")
    with world.node.store.read() as tx:
        assert tx.get_lease(lease.id) == lease  # untouched by the rotation
        assert tx.get_task(task.id) == task

    world.keys.flush_usage()
    before = _snapshot_keys(world)
    with world.node.store.read() as tx:
        head = tx.audit_head()[0]
    ended = world.node.leases.end_task(task, "task ended", "test")
    assert ended >= 1
    with world.node.store.read() as tx:
        assert tx.find_leases(LeaseFilter(task_id=task.id)) == []  # no live lease left
    assert _snapshot_keys(world) == before  # no key changed
    with world.node.store.read() as tx:
        by_end = [r.action for r in tx.list_audit(head, 100_000)]
    assert by_end and not any(a.startswith("key.") for a in by_end)
    # the key still works for the next task, and the old ciphertext still opens
    assert world.keys.decrypt(world.user, "dek", ciphertext) == b"order data"
