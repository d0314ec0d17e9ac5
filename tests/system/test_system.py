"""System operations through `SystemService`: what follows each barrier change is told to
the listeners the composition root attached, in order, and only when it happened."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tether.audit import AuditLog
from tether.auth import Authenticator, Forbidden, Principal
from tether.barrier import Barrier
from tether.store import Store, open_store
from tether.system import SystemService


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("memory://")
    yield s
    s.close()


@pytest.fixture
def system(store: Store) -> SystemService:
    barrier = Barrier(store)
    return SystemService(
        store, barrier, AuditLog(barrier.audit_key), Authenticator(store, barrier.token_key)
    )


def _calls(system: SystemService) -> list[str]:
    calls: list[str] = []
    system.on_opened += [lambda: calls.append("opened:keys"), lambda: calls.append("opened:rewrap")]
    system.on_sealed.append(lambda: calls.append("sealed"))
    system.on_rotated.append(lambda: calls.append("rotated"))
    return calls


def test_listeners_hear_of_unseal_seal_and_rotation_only_when_they_happen(
    store: Store, system: SystemService
) -> None:
    calls = _calls(system)
    shares = system.initialize(3, 2, seal_after=True).shares
    assert calls == []
    source = "192.0.2.1"
    assert system.unseal(shares[0], source).sealed
    assert calls == []  # one share of two: nothing opened
    assert not system.unseal(shares[1], source).sealed
    assert calls == ["opened:keys", "opened:rewrap"]
    assert not system.unseal(shares[2], source).sealed  # already open: no second notice
    assert calls == ["opened:keys", "opened:rewrap"]

    admin = Principal(token_id="tok_x", name="ops", roles=("admin",))
    system.rotate(admin)
    assert calls[-1] == "rotated"
    assert system.seal(admin).sealed
    assert calls[-1] == "sealed"
    with store.read() as tx:
        actions = [e.action for e in tx.list_audit(0, 100)]
    assert actions == ["sys.init", "sys.unseal", "sys.rotate", "sys.seal"]
    assert system.verify_audit().ok


def test_start_tells_the_listeners_only_if_the_barrier_is_open(system: SystemService) -> None:
    calls = _calls(system)
    system.start()
    assert calls == []  # not even initialized
    system.initialize(1, 1)
    system.start()
    assert calls == ["opened:keys", "opened:rewrap"]


def test_a_refused_rotation_tells_nobody(system: SystemService) -> None:
    calls = _calls(system)
    system.initialize(1, 1)
    auditor = Principal(token_id="tok_y", name="audit", roles=("auditor",))
    with pytest.raises(Forbidden, match="admin"):
        system.rotate(auditor)
    assert calls == []
