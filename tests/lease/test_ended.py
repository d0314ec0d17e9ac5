"""What a process remembers about live leases, and when it may answer from memory."""

from __future__ import annotations

import datetime as dt

from tether._internal.timeutil import utcnow
from tether.lease import EndedLeases
from tether.model import Lease, LeaseState


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _lease(lease_id: str) -> Lease:
    now = utcnow()
    return Lease(
        id=lease_id,
        identity_id="svc",
        owner_id="team",
        provider="jwt",
        issued_at=now,
        expires_at=now + dt.timedelta(minutes=5),
        state=LeaseState.ACTIVE,
    )


def test_memory_answers_only_while_the_feed_is_current() -> None:
    clock = _Clock()
    known = EndedLeases(max_age=1.0, clock=clock)
    known.remember("jti:lse_a", _lease("lse_a"), None, known.generation)
    assert known.recall("jti:lse_a") is None  # no feed has spoken yet: ask the store

    known.heartbeat(clock.now)
    hit = known.recall("jti:lse_a")
    assert hit is not None and hit[0].id == "lse_a"

    clock.now += 1.5  # the feed went quiet for longer than the bound
    assert known.recall("jti:lse_a") is None
    known.heartbeat(clock.now - 0.1)
    assert known.recall("jti:lse_a") is not None


def test_an_end_forgets_the_lease_and_it_is_never_remembered_again() -> None:
    known = EndedLeases(standalone=True)
    known.remember("hash-1", _lease("lse_a"), None, known.generation)
    known.add(["lse_a"])
    assert known.recall("hash-1") is None
    assert "lse_a" in known
    known.remember("hash-1", _lease("lse_a"), None, known.generation)
    assert known.recall("hash-1") is None


def test_a_read_that_raced_an_end_is_not_remembered() -> None:
    known = EndedLeases(standalone=True)
    before_the_read = known.generation
    known.add(["lse_other"])  # some lease ended while the store was being read
    known.remember("hash-1", _lease("lse_a"), None, before_the_read)
    assert known.recall("hash-1") is None
    known.remember("hash-1", _lease("lse_a"), None, known.generation)
    assert known.recall("hash-1") is not None


def test_memory_is_bounded() -> None:
    known = EndedLeases(standalone=True, capacity=3)
    for n in range(5):
        known.remember(f"k{n}", _lease(f"lse_{n}"), None, known.generation)
    assert [known.recall(f"k{n}") is not None for n in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_a_heartbeat_never_moves_back() -> None:
    clock = _Clock()
    known = EndedLeases(clock=clock)
    known.heartbeat(clock.now)
    known.heartbeat(clock.now - 10)
    assert known.current()
