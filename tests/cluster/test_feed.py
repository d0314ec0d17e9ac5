"""Two nodes in one process on one database: each applies the other's changes to what it
caches, through the change feed, and exactly one of them runs the background work.

Real stores (SQLite file, PostgreSQL; and one MemoryStore shared by both nodes). The
nodes' threads run as in production; tests poll for the outcome and never sleep.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clock import SettableClock
from tests.cluster._wait import BOUND, within
from tests.factories import estate_document
from tests.services import throwaway_postgres_database
from tether.app import Tether
from tether.auth import Principal, Unauthenticated
from tether.cluster import Feed
from tether.config import Settings
from tether.estate import parse_estate
from tether.lease import RevokeTarget
from tether.model import Lease, LeaseState
from tether.store import Store, open_store
from tether.store._memory import MemoryStore


@pytest.fixture
def pair(store_url: str, tmp_path: Path) -> Iterator[tuple[Tether, Tether]]:
    """Node A (initialized) and node B (unsealed with A's share), both started."""
    shared: Store | None = MemoryStore() if store_url == "memory://" else None

    clock = SettableClock()

    def node(name: str) -> Tether:
        store = shared or open_store(store_url)
        settings = Settings(home=tmp_path / name, database_url=store_url)
        return Tether(settings, store=store, clock=clock)

    a = node("a")
    init = a.initialize(shares=1, threshold=1)
    b = node("b")
    b.unseal(init.shares[0], source="test")
    a.root_token = init.root_token  # type: ignore[attr-defined]
    a.test_clock = clock  # type: ignore[attr-defined]
    a.start()
    b.start()
    try:
        yield a, b
    finally:
        a.stop()
        b.stop()


def test_a_revoked_api_token_is_refused_on_the_other_node_within_a_second(
    pair: tuple[Tether, Tether],
) -> None:
    a, b = pair
    token, record = a.tokens.create("ci", ["admin"], actor="test")
    assert b.auth.authenticate(token).token_id == record.id  # now in B's cache
    a.tokens.revoke(record.id, actor="test")

    def refused() -> bool:
        try:
            b.auth.authenticate(token)
        except Unauthenticated:
            return True
        return False

    within(refused)


def test_an_estate_applied_on_one_node_is_in_force_on_the_other_within_a_second(
    pair: tuple[Tether, Tether],
) -> None:
    a, b = pair
    document = estate_document(4)
    a.estate.apply(parse_estate(document), "test", document)
    within(lambda: set(b.view.current.identities) == set(a.view.current.identities))
    assert b.view.current.version == a.view.current.version > 0
    within(lambda: len(b.view.current.profiles) == len(document["profiles"]))


def test_ended_leases_reach_every_node_and_its_heartbeat_is_current(
    pair: tuple[Tether, Tether],
) -> None:
    a, b = pair
    document = estate_document(2)
    a.estate.apply(parse_estate(document), "test", document)
    identity = a.view.current.identities[sorted(a.view.current.identities)[0]]
    now = a.clock()
    leases = [
        Lease(
            id=f"lse_feed{i}",
            identity_id=identity.id,
            owner_id=identity.owner_id,
            provider="token",
            issued_at=now,
            expires_at=now.replace(year=now.year + 1),
            state=LeaseState.ACTIVE,
        )
        for i in range(3)
    ]
    with a.store.transaction() as tx:
        tx.insert_leases(leases)
    assert a.leases.revoke(RevokeTarget(identity_id=identity.id), "test", "test") == 3
    within(lambda: all(lease.id in b.ended_leases for lease in leases))
    within(lambda: b.ended_leases.current(max_age=BOUND))
    within(lambda: all(lease.id in a.ended_leases for lease in leases))  # its own events too


def test_new_signing_keys_and_keyring_terms_reach_the_other_node(
    pair: tuple[Tether, Tether],
) -> None:
    a, b = pair
    within(lambda: bool(b.signing_keys.jwks()["keys"]), limit=10)
    before = {k["kid"] for k in b.signing_keys.jwks()["keys"]}
    a.test_clock.advance(days=1, seconds=1)  # type: ignore[attr-defined]
    a.signing_keys.ensure_current()  # the key signs nothing new now: a new one is made

    def stored() -> set[str]:
        # What is stored is the truth (A's sweep may rotate at the same moment).
        with a.store.read() as tx:
            return {k["kid"] for k in json.loads(tx.get_meta("jwt/signing-keys") or b"[]")}

    assert stored() - before
    within(lambda: stored() <= {k["kid"] for k in b.signing_keys.jwks()["keys"]})

    assert b.barrier.status().term == a.barrier.status().term
    term = a.rotate(Principal("tok_test", "test", ("admin",)))
    within(lambda: b.barrier.status().term == term)


def test_exactly_one_node_leads_and_the_other_takes_over_when_it_stops(
    pair: tuple[Tether, Tether],
) -> None:
    a, b = pair
    within(lambda: a.leadership.leading or b.leadership.leading, limit=10)
    assert a.leadership.leading != b.leadership.leading
    leader, other = (a, b) if a.leadership.leading else (b, a)
    leader.leadership.stop()  # gives the lease up: no need to wait for it to expire
    within(lambda: other.leadership.leading, limit=5)
    assert not leader.leadership.leading


def test_a_sealed_node_gives_up_the_lead(pair: tuple[Tether, Tether]) -> None:
    a, b = pair
    within(lambda: a.leadership.leading or b.leadership.leading, limit=10)
    leader, other = (a, b) if a.leadership.leading else (b, a)
    leader.barrier.seal()
    within(lambda: other.leadership.leading, limit=5)
    assert not leader.leadership.leading


# -- the feed on its own --


@pytest.fixture
def lone_store(store_url: str) -> Iterator[Store]:
    store: Store = MemoryStore() if store_url == "memory://" else open_store(store_url)
    store.migrate()
    yield store
    store.close()


def _publish(store: Store, kind: str, **data: object) -> None:
    with store.transaction() as tx:
        tx.publish(kind, data)


@pytest.mark.service
def test_postgresql_notifies_the_feed_so_it_need_not_poll() -> None:
    with throwaway_postgres_database() as url:
        store = open_store(url)
        store.migrate()
        # A poll no test waits out: only the NOTIFY sent at commit can wake the feed.
        feed = Feed(store, poll=3600)
        seen: list[object] = []
        feed.subscribe("test.kind", lambda data: seen.append(data["n"]))
        feed.start()
        try:
            within(lambda: feed.seq == 0 and _listening(store), limit=10)
            _publish(store, "test.kind", n=1)
            within(lambda: seen == [1])
        finally:
            feed.stop()
            store.close()


def _listening(store: Store) -> bool:
    with store.read() as tx:
        conn = tx._c  # type: ignore[attr-defined]
        rows = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN tether_events'"
        )
        return bool(rows.scalar_one())


def test_a_failing_handler_is_retried_and_the_feed_does_not_beat_meanwhile(
    lone_store: Store,
) -> None:
    feed = Feed(lone_store)
    beats: list[float] = []
    failures = [RuntimeError("not yet")]
    applied: list[object] = []

    def handler(data: object) -> None:
        if failures:
            raise failures.pop()
        applied.append(data)

    feed.subscribe("test.kind", handler)
    feed.on_heartbeat.append(beats.append)
    assert feed.poll_once() and len(beats) == 1  # nothing to apply: current
    _publish(lone_store, "test.kind", n=1)
    with pytest.raises(RuntimeError):
        feed.poll_once()
    assert len(beats) == 1 and applied == []
    assert feed.poll_once()
    assert applied == [{"n": 1}] and len(beats) == 2
    assert beats[1] > beats[0]


def test_a_feed_that_fell_behind_the_pruned_events_reloads_and_stops_vouching(
    lone_store: Store,
) -> None:
    import datetime as dt

    from tether._internal.timeutil import utcnow

    feed = Feed(lone_store)
    resyncs: list[int] = []
    beats: list[float] = []
    feed.on_resync.append(lambda: resyncs.append(feed.seq))
    feed.on_heartbeat.append(beats.append)
    _publish(lone_store, "test.kind", n=1)
    _publish(lone_store, "test.kind", n=2)
    with lone_store.transaction() as tx:
        tx.prune_events(utcnow() + dt.timedelta(seconds=1))
    assert feed.poll_once()
    assert len(resyncs) == 1 and beats == []
    _publish(lone_store, "test.kind", n=3)
    assert feed.poll_once()
    assert len(resyncs) == 1 and beats == []  # an incomplete set of ended leases
