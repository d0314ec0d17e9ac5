"""Failed unseal attempts: rate-limited per source, bounded in memory, summarized for audit."""

from __future__ import annotations

import base64
import os
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from tether.audit import AuditLog
from tether.barrier import (
    UNSEAL_FAILURE_LIMIT,
    UNSEAL_FAILURE_WINDOW,
    UNSEAL_MAX_SOURCES,
    Barrier,
    InvalidShare,
    NotInitialized,
    RateLimited,
    UnsealFailures,
    UnsealGuard,
    encode_share,
)
from tether.model import AuditEvent
from tether.store import Store, open_store


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Sink:
    """Collects the summaries the guard hands to the audit log."""

    def __init__(self) -> None:
        self.summaries: list[UnsealFailures] = []
        self.fail_next = False

    def __call__(self, batch: Sequence[UnsealFailures]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the audit log is down")
        self.summaries.extend(batch)

    def total(self, source: str | None = None) -> int:
        return sum(s.count for s in self.summaries if source in (None, s.source))


class Tripwire(str):
    """A share that fails the test if anything reads it."""

    __slots__ = ()

    def strip(self, chars: str | None = None) -> str:
        raise AssertionError("a rate-limited share was read")


def _bogus() -> str:
    return base64.b64encode(os.urandom(32) + b"\x07").decode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def barrier(store: Store, clock: Clock) -> Barrier:
    return Barrier(store, clock=clock)


def _fail(barrier: Barrier, source: str, sink: Sink, times: int, share: str = "") -> None:
    for _ in range(times):
        with pytest.raises(InvalidShare):
            barrier.submit_share(share or _bogus(), source, sink)


def test_the_limits_are_module_constants() -> None:
    assert (UNSEAL_FAILURE_LIMIT, UNSEAL_FAILURE_WINDOW, UNSEAL_MAX_SOURCES) == (10, 60.0, 10_000)
    guard = UnsealGuard()
    assert (guard.limit, guard.window, guard.max_sources) == (10, 60.0, 10_000)


# -- the limit --


def test_a_source_is_refused_after_the_limit_until_its_window_ends(
    barrier: Barrier, shares: list[str], clock: Clock
) -> None:
    sink = Sink()
    barrier.submit_share(shares[0], "10.0.0.1", sink)
    _fail(barrier, "10.0.0.1", sink, UNSEAL_FAILURE_LIMIT)
    clock.advance(15.5)
    with pytest.raises(RateLimited, match="try again in 45 s") as refused:
        barrier.submit_share(shares[1], "10.0.0.1", sink)  # even a good share
    assert refused.value.status_code == 429
    assert refused.value.code == "rate_limited"
    assert refused.value.retry_after == 45
    with pytest.raises(RateLimited):
        barrier.submit_share(Tripwire(shares[1]), "10.0.0.1", sink)
    assert barrier.status().progress == 1

    clock.advance(UNSEAL_FAILURE_WINDOW - 15.5)  # the window ends
    barrier.submit_share(shares[1], "10.0.0.1", sink)
    assert barrier.status().progress == 2
    _fail(barrier, "10.0.0.1", sink, UNSEAL_FAILURE_LIMIT)  # a fresh window, a fresh limit
    with pytest.raises(RateLimited):
        barrier.submit_share(shares[2], "10.0.0.1", sink)
    assert barrier.status().progress == 2


def test_the_limit_is_per_source(barrier: Barrier, shares: list[str]) -> None:
    sink = Sink()
    _fail(barrier, "10.0.0.1", sink, UNSEAL_FAILURE_LIMIT)
    with pytest.raises(RateLimited):
        barrier.submit_share(shares[0], "10.0.0.1", sink)
    barrier.submit_share(shares[0], "10.0.0.2", sink)
    _fail(barrier, "10.0.0.2", sink, 1)
    barrier.submit_share(shares[1], "10.0.0.3", sink)
    status = barrier.submit_share(shares[2], "10.0.0.2", sink)
    assert not status.sealed


def test_good_shares_do_not_count_as_failures(barrier: Barrier, shares: list[str]) -> None:
    sink = Sink()
    for share in shares[:3]:
        barrier.submit_share(share, "10.0.0.1", sink)
    assert len(barrier.unseal_guard) == 0
    barrier.seal()
    _fail(barrier, "10.0.0.1", sink, UNSEAL_FAILURE_LIMIT - 1)
    barrier.submit_share(shares[3], "10.0.0.1", sink)
    barrier.submit_share(shares[4], "10.0.0.1", sink)
    _fail(barrier, "10.0.0.1", sink, 1)  # the tenth failure
    with pytest.raises(RateLimited):
        barrier.submit_share(shares[0], "10.0.0.1", sink)


def test_duplicates_and_malformed_shares_count_as_failures(
    barrier: Barrier, shares: list[str]
) -> None:
    sink = Sink()
    barrier.submit_share(shares[0], "10.0.0.1", sink)
    _fail(barrier, "10.0.0.1", sink, 5, share=shares[0])
    _fail(barrier, "10.0.0.1", sink, 5, share="not base64!")
    with pytest.raises(RateLimited):
        barrier.submit_share(shares[1], "10.0.0.1", sink)
    assert barrier.status().progress == 1


def test_failures_before_init_and_without_a_source_are_not_limited(
    store: Store, clock: Clock
) -> None:
    barrier = Barrier(store, clock=clock)
    sink = Sink()
    for _ in range(UNSEAL_FAILURE_LIMIT + 5):
        with pytest.raises(NotInitialized):
            barrier.submit_share(_bogus(), "10.0.0.1", sink)
        with pytest.raises(InvalidShare):  # malformed, before init: refused, not counted
            barrier.submit_share("junk", "10.0.0.1", sink)
    assert len(barrier.unseal_guard) == 0
    assert sink.summaries == []
    with store.transaction() as tx:
        parts = barrier.initialize(tx, shares=3, threshold=2)
    barrier.seal()
    for _ in range(UNSEAL_FAILURE_LIMIT + 5):  # the key file path gives no source
        with pytest.raises(InvalidShare):
            barrier.submit_share(_bogus())
    barrier.submit_share(encode_share(parts[0]))
    barrier.submit_share(encode_share(parts[2]))
    assert not barrier.sealed


# -- bounded memory --


def test_memory_is_bounded_by_evicting_the_oldest_window_and_counts_still_add_up(
    clock: Clock,
) -> None:
    guard = UnsealGuard(clock=clock, max_sources=100)
    sink = Sink()
    for i in range(1000):
        clock.advance(0.001)
        guard.failed(f"10.0.{i // 256}.{i % 256}", "bad", sink)
        guard.failed(f"10.0.{i // 256}.{i % 256}", "bad", sink)
        assert len(guard) <= 100
    assert len(guard) == 100
    guard.flush(sink)
    assert sink.total() == 2000
    evicted = [s for s in sink.summaries if s.closed]
    assert len(evicted) == 900
    assert all(s.count == 1 and s.window_total == 2 for s in evicted)


def test_ended_windows_are_forgotten(clock: Clock) -> None:
    guard = UnsealGuard(clock=clock)
    sink = Sink()
    for i in range(50):
        guard.failed(f"192.0.2.{i}", "bad", sink)
    clock.advance(UNSEAL_FAILURE_WINDOW)
    guard.check("198.51.100.1", sink)
    assert len(guard) == 0
    assert sink.total() == 50


# -- summaries for the audit log --


def test_a_window_is_summarized_at_its_first_failure_at_the_limit_and_at_its_end(
    barrier: Barrier, shares: list[str], clock: Clock
) -> None:
    sink = Sink()
    _fail(barrier, "10.0.0.1", sink, 1)
    assert [(s.count, s.window_total, s.limited, s.closed) for s in sink.summaries] == [
        (1, 1, False, False)
    ]
    assert sink.summaries[0].reasons == {"this share is not one of the shares made at init": 1}
    _fail(barrier, "10.0.0.1", sink, 4)
    _fail(barrier, "10.0.0.1", sink, 5, share="AAAA")
    assert len(sink.summaries) == 2
    at_limit = sink.summaries[1]
    assert (at_limit.count, at_limit.window_total, at_limit.limited) == (9, 10, True)
    assert at_limit.retry_after == 60
    assert at_limit.reasons == {
        "this share is not one of the shares made at init": 4,
        "the share has the wrong length or form": 5,
    }
    for _ in range(500):
        with pytest.raises(RateLimited):
            barrier.submit_share(shares[0], "10.0.0.1", sink)
    assert len(sink.summaries) == 2  # refusals add nothing until the window closes

    clock.advance(UNSEAL_FAILURE_WINDOW)
    barrier.submit_share(shares[0], "10.0.0.1", sink)  # the next attempt closes the window
    closed = sink.summaries[2]
    assert (closed.count, closed.window_total, closed.closed) == (500, 510, True)
    assert closed.reasons == {"refused unread: too many failed attempts from this source": 500}
    assert sink.total() == 510
    rendered = repr(sink.summaries)
    for share in shares:
        assert share not in rendered


def test_flush_records_the_rest_but_keeps_the_limit(
    barrier: Barrier, shares: list[str], clock: Clock
) -> None:
    sink = Sink()
    _fail(barrier, "10.0.0.1", sink, 3)
    barrier.unseal_guard.flush(sink)
    barrier.unseal_guard.flush(sink)  # nothing new: nothing written
    assert [(s.count, s.closed) for s in sink.summaries] == [(1, False), (2, False)]
    _fail(barrier, "10.0.0.1", sink, UNSEAL_FAILURE_LIMIT - 3)
    with pytest.raises(RateLimited):
        barrier.submit_share(shares[0], "10.0.0.1", sink)
    barrier.unseal_guard.flush(sink)
    with pytest.raises(RateLimited):
        barrier.submit_share(shares[0], "10.0.0.1", sink)
    barrier.unseal_guard.flush(sink)
    assert sink.total() == UNSEAL_FAILURE_LIMIT + 2


def test_a_failed_audit_write_keeps_the_tally(
    barrier: Barrier, shares: list[str], clock: Clock
) -> None:
    sink = Sink()
    sink.fail_next = True
    with pytest.raises(RuntimeError, match="audit log is down"):
        barrier.submit_share(_bogus(), "10.0.0.1", sink)
    _fail(barrier, "10.0.0.1", sink, 2)
    clock.advance(UNSEAL_FAILURE_WINDOW)
    sink.fail_next = True
    with pytest.raises(RuntimeError):
        barrier.unseal_guard.flush(sink)
    assert len(barrier.unseal_guard) == 1  # not forgotten while unrecorded
    barrier.unseal_guard.flush(sink)
    assert sink.total() == 3
    assert len(barrier.unseal_guard) == 0


# -- concurrency --


def test_concurrent_attempts_cannot_overrun_the_limit(barrier: Barrier, shares: list[str]) -> None:
    sink = Sink()
    outcomes: list[str] = []
    start = threading.Barrier(30)

    def attempt() -> None:
        start.wait()
        try:
            barrier.submit_share(_bogus(), "10.0.0.1", sink)
        except (InvalidShare, RateLimited) as exc:
            outcomes.append(exc.code)

    threads = [threading.Thread(target=attempt) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["invalid_share"] * UNSEAL_FAILURE_LIMIT + ["rate_limited"] * 20
    assert sink.total() == UNSEAL_FAILURE_LIMIT  # the 20 refusals are summarized later
    barrier.unseal_guard.flush(sink)
    assert sink.total() == 30


@pytest.mark.timeout(60)
def test_writing_a_summary_does_not_deadlock_with_a_writer_waiting_for_the_barrier(
    tmp_path: Path,
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'deadlock.db'}")
    store.migrate()
    barrier = Barrier(store)
    with store.transaction() as tx:
        barrier.initialize(tx, shares=3, threshold=2)  # left unsealed, so it can rotate
    entered = threading.Event()
    audit = AuditLog(barrier.audit_key)

    def record(batch: Sequence[UnsealFailures]) -> None:
        entered.set()
        with store.transaction() as tx:  # waits for the writer below
            audit.append(tx, [AuditEvent(action="sys.unseal.failed", actor="t") for _ in batch])

    def fail() -> None:
        with pytest.raises(InvalidShare):
            barrier.submit_share("junk", "10.0.0.1", record)

    with store.transaction() as tx:
        failing = threading.Thread(target=fail)
        failing.start()
        assert entered.wait(timeout=10)
        assert barrier.rotate(tx) == 2  # needs the barrier's lock while holding the store
    failing.join(timeout=30)
    assert not failing.is_alive()
    with store.read() as tx:
        assert tx.audit_head()[0] == 1
    store.close()
