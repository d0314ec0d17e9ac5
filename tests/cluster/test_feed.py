"""Two nodes in one process on one database: each applies the other's changes to what it
caches, through the change feed, and exactly one of them runs the background work.

Real stores (SQLite file, PostgreSQL; and one MemoryStore shared by both nodes). The
nodes' threads run as in production; tests poll for the outcome and never sleep.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.clock import SettableClock
from tests.factories import estate_document
from tests.services import throwaway_postgres_database
from tether.app import Tether
from tether.auth import Principal, Unauthenticated
from tether.config import Settings
from tether.estate import parse_estate
from tether.lease import RevokeTarget
from tether.model import Lease, LeaseState
from tether.store import Store, open_store
from tether.store._memory import MemoryStore

#: The issue's bound: a change committed on one node is in force on another within 1 s.
BOUND = 1.0


def within(condition: Callable[[], bool], limit: float = BOUND) -> float:
    """Seconds until `condition()` holds, polled; fails once past `limit`."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        if elapsed > limit:
            pytest.fail(f"not in force after {elapsed:.2f} s (bound {limit} s)")
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.db'}"
    else:
        with throwaway_postgres_database() as url:
            yield url


@pytest.fixture
def pair(shared_url: str, tmp_path: Path) -> Iterator[tuple[Tether, Tether]]:
    """Node A (initialized) and node B (unsealed with A's share), both started."""
    shared: Store | None = MemoryStore() if shared_url == "memory://" else None

    clock = SettableClock()

    def node(name: str) -> Tether:
        store = shared or open_store(shared_url)
        settings = Settings(home=tmp_path / name, database_url=shared_url)
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
    assert all(lease.id in a.ended_leases for lease in leases)  # its own events too


def test_new_signing_keys_and_keyring_terms_reach_the_other_node(
    pair: tuple[Tether, Tether],
) -> None:
    a, b = pair
    within(lambda: bool(b.signing_keys.jwks()["keys"]), limit=10)
    before = {k["kid"] for k in b.signing_keys.jwks()["keys"]}
    a.test_clock.advance(days=1, seconds=1)  # type: ignore[attr-defined]
    a.signing_keys.ensure_current()  # the key signs nothing new now: a new one is made
    new = {k["kid"] for k in a.signing_keys.jwks()["keys"]} - before
    assert new
    within(lambda: new <= {k["kid"] for k in b.signing_keys.jwks()["keys"]})

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
