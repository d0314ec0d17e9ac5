"""The store's part of tether.cluster, on every backend: events in commit order and
atomic with their transaction, the leadership lease and its fence, claimed retries."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tether._internal.timeutil import utcnow
from tether.cluster import Deposed, FencedStore, Leadership
from tether.cluster._leader import _FENCE
from tether.model import Lease, LeaseState
from tether.store import Store, open_store


class Boom(Exception):
    pass


def test_an_event_exists_exactly_when_its_transaction_commits(store: Store) -> None:
    with store.read() as tx:
        head = tx.events_head()
    with pytest.raises(Boom), store.transaction() as tx:
        tx.publish("test.kind", {"n": 0})
        raise Boom
    with store.transaction() as tx:
        tx.publish("test.kind", {"n": 1})
        tx.publish("test.other", {"n": 2, "ids": ["a", "b"]})
    with store.transaction() as tx:
        tx.publish("test.kind", {"n": 3})
    with store.read() as tx:
        events = tx.events_after(head, 10)
        assert tx.events_head() == head + 3
        assert [e.seq for e in tx.events_after(head + 1, 1)] == [head + 2]
    # Dense and in commit order: a rolled-back publish leaves no gap.
    assert [e.seq for e in events] == [head + 1, head + 2, head + 3]
    assert [(e.kind, dict(e.data)) for e in events] == [
        ("test.kind", {"n": 1}),
        ("test.other", {"n": 2, "ids": ["a", "b"]}),
        ("test.kind", {"n": 3}),
    ]
    with store.transaction() as tx:
        assert tx.prune_events(utcnow() - dt.timedelta(hours=1)) == 0
        assert tx.prune_events(utcnow() + dt.timedelta(seconds=1)) == 3
    with store.read() as tx:
        assert tx.events_after(head, 10) == []
        assert tx.events_head() == head + 3  # pruning never moves the counter back


def test_the_leadership_lease_is_held_by_one_holder_and_each_takeover_is_a_new_term(
    store: Store,
) -> None:
    with store.transaction() as tx:
        first = tx.claim_leadership("work", "a", 60)
        assert first is not None
        assert tx.claim_leadership("work", "b", 60) is None
        assert tx.claim_leadership("work", "a", 60) == first  # renewed, same term
        assert tx.holds_leadership("work", "a", first)
        assert not tx.holds_leadership("work", "b", first)
        assert tx.claim_leadership("other", "b", 60) is not None  # names are separate
    with store.transaction() as tx:
        tx.release_leadership("work", "b")  # not b's: nothing happens
        assert tx.claim_leadership("work", "b", 60) is None
        tx.release_leadership("work", "a")
        assert not tx.holds_leadership("work", "a", first)
        second = tx.claim_leadership("work", "b", 60)
        assert second == first + 1
    with store.transaction() as tx:
        # A holder whose lease ran out (ttl in the past) is taken over likewise.
        assert tx.claim_leadership("work", "b", -1) == second
        assert not tx.holds_leadership("work", "b", second)
        assert tx.claim_leadership("work", "a", 60) == second + 1


def _revoking(n: int, now: dt.datetime) -> list[Lease]:
    return [
        Lease(
            id=f"lse_retry{i}",
            identity_id="svc",
            owner_id="team",
            provider="postgres",
            issued_at=now - dt.timedelta(minutes=5),
            expires_at=now - dt.timedelta(minutes=1),
            state=LeaseState.REVOKING,
            target="db",
            next_attempt_at=now - dt.timedelta(seconds=1),
        )
        for i in range(n)
    ]


def test_a_claimed_retry_is_nobody_elses_until_the_claim_runs_out(store: Store) -> None:
    now = utcnow()
    with store.transaction() as tx:
        tx.insert_leases(_revoking(3, now))
    until = now + dt.timedelta(seconds=30)
    with store.transaction() as tx:
        claimed = tx.claim_retries(now, until, 2)
    assert [x.id for x in claimed] == ["lse_retry0", "lse_retry1"]
    assert all(x.next_attempt_at == until for x in claimed)
    with store.transaction() as tx:
        assert [x.id for x in tx.claim_retries(now, until, 10)] == ["lse_retry2"]
        assert tx.claim_retries(now, until, 10) == []
    # The runner died: once the claim ran out, they are due again, not lost.
    with store.transaction() as tx:
        later = tx.claim_retries(until, until + dt.timedelta(seconds=30), 10)
    assert len(later) == 3


@pytest.mark.service
def test_concurrent_claims_on_postgresql_never_overlap() -> None:
    from tests.services import throwaway_postgres_database

    with throwaway_postgres_database() as url:
        store = open_store(url)
        store.migrate()
        try:
            now = utcnow()
            with store.transaction() as tx:
                tx.insert_leases(_revoking(40, now))
            barrier = threading.Barrier(4)
            claims: list[list[str]] = []

            def claim() -> None:
                barrier.wait()
                while True:
                    with store.transaction() as tx:
                        got = tx.claim_retries(now, now + dt.timedelta(seconds=30), 3)
                    if not got:
                        return
                    claims.append([x.id for x in got])

            threads = [threading.Thread(target=claim) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            ids = [i for batch in claims for i in batch]
            assert sorted(ids) == sorted(x.id for x in _revoking(40, now))
        finally:
            store.close()


@pytest.fixture
def fenced(store_url: str, tmp_path: Path) -> Iterator[tuple[FencedStore, Store]]:
    from tether.store._memory import MemoryStore

    inner: Store = MemoryStore() if store_url == "memory://" else open_store(store_url)
    inner.migrate()
    yield FencedStore(inner), inner
    inner.close()


def test_a_deposed_leaders_background_write_is_rolled_back(
    fenced: tuple[FencedStore, Store],
) -> None:
    store, inner = fenced
    leader = Leadership(store, ttl=60)
    usurper = Leadership(store, ttl=60)
    leader.campaign()
    usurper.campaign()
    assert leader.leading and not usurper.leading

    def write(n: int) -> None:
        with store.transaction() as tx:
            tx.publish("test.work", {"n": n})

    leader.run(lambda: write(1))
    usurper.run(lambda: write(99))  # not the leader: does nothing
    # The leader stalls past its lease (as if paused); the usurper takes over.
    with inner.transaction() as tx:
        tx.claim_leadership(leader.name, leader.holder, -1)
    usurper.campaign()
    assert usurper.leading
    assert leader.leading  # it does not know yet...
    leader.run(lambda: write(2))  # ...but its write is fenced out
    with pytest.raises(Deposed), leader_fence(leader):
        write(3)
    usurper.run(lambda: write(4))
    write(5)  # the request path is never fenced
    with inner.read() as tx:
        done = [e.data["n"] for e in tx.events_after(0, 100) if e.kind == "test.work"]
    assert done == [1, 4, 5]


@contextmanager
def leader_fence(leadership: Leadership) -> Iterator[None]:
    """A block under `leadership`'s fence, with Deposed left to the caller."""
    fence = leadership.fence()
    assert fence is not None
    token = _FENCE.set(fence)
    try:
        yield
    finally:
        _FENCE.reset(token)
