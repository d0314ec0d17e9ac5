"""The background scheduler: a worker that survives its work, a sweep whose cadence is the
node's clock, and reconciliation that keeps going when one target is down."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.clock import SettableClock
from tether.app import Tether
from tether.audit import AuditLog
from tether.config import Settings
from tether.lifecycle import LifecycleWorker, reconcile_targets
from tether.providers import ProviderError
from tether.store import Store, open_store

# -- the worker --


def test_the_worker_runs_at_once_survives_a_failing_pass_and_runs_when_woken() -> None:
    passes: list[int] = []
    second, third = threading.Event(), threading.Event()

    def work() -> None:
        passes.append(len(passes) + 1)
        if len(passes) == 1:
            raise RuntimeError("the first pass fails")
        (second if len(passes) == 2 else third).set()

    # An interval no test waits out: only start and wake-ups make it run.
    worker = LifecycleWorker(work, interval=3600, name="test")
    worker.start()
    try:
        worker.wake()  # the failed first pass did not stop the thread
        assert second.wait(30), "no second pass after a failing one"
        worker.wake()
        assert third.wait(30), "a wake-up did not run a pass"
    finally:
        worker.stop()
    assert worker.stopping
    assert passes[:3] == [1, 2, 3]


def test_wake_ups_in_a_stream_are_paced_by_the_minimum_gap() -> None:
    """A pass that wakes its own worker (governance: a flush marks identities) must not
    run back to back: wake-ups within `min_gap` of a pass join the next one, which still
    comes (nothing woken for is lost)."""
    passes: list[float] = []
    worker = LifecycleWorker(lambda: passes.append(time.monotonic()), 3600, min_gap=0.5)
    worker.start()
    try:
        streaming_until = time.monotonic() + 1.2
        while time.monotonic() < streaming_until:
            worker.wake()
            time.sleep(0.001)
        deadline = time.monotonic() + 30
        while passes[-1] < streaming_until and time.monotonic() < deadline:
            time.sleep(0.01)  # the stream's last wake-up is served too
    finally:
        worker.stop()
    # About 1,000 wake-ups: the first pass at start, then at most one per gap.
    assert 2 <= len(passes) <= 5, passes
    gaps = [later - earlier for earlier, later in itertools.pairwise(passes)]
    assert min(gaps) >= 0.45, gaps
    assert passes[-1] >= streaming_until


def test_a_minimum_gap_does_not_delay_stopping() -> None:
    ran = threading.Event()
    worker = LifecycleWorker(ran.set, 3600, min_gap=3000)
    worker.start()
    assert ran.wait(30)
    worker.wake()  # now it would wait out the gap
    started = time.monotonic()
    worker.stop(timeout=30)
    assert time.monotonic() - started < 20  # stop() interrupts the wait


def test_a_worker_never_started_stops_quietly() -> None:
    worker = LifecycleWorker(lambda: None, interval=1)
    worker.stop()
    assert worker.stopping


# -- the sweep's cadence is the node's clock --


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[tuple[Tether, SettableClock]]:
    clock = SettableClock(dt.datetime(2027, 1, 31, 12, 0, tzinfo=dt.UTC))
    settings = Settings(home=tmp_path, database_url="memory://", reconcile_interval=60)
    node = Tether(settings, clock=clock)
    node.initialize(1, 1)
    yield node, clock
    node.stop()


def _seen(node: Tether, jti: str, expires_at: dt.datetime) -> bool:
    """Whether the node still remembers `jti` (remembering it again if not)."""
    with node.store.transaction() as tx:
        return not tx.remember_jti("https://issuer.example", jti, expires_at)


def test_housekeeping_forgets_seen_token_ids_by_the_clock_and_its_period(
    clocked: tuple[Tether, SettableClock],
) -> None:
    node, clock = clocked
    start = clock.now
    assert not _seen(node, "j1", start + dt.timedelta(seconds=30))
    node.sweep()  # housekeeping runs on the first pass; j1 has not expired
    assert _seen(node, "j1", start + dt.timedelta(seconds=30))

    clock.advance(seconds=40)  # j1 expired, but housekeeping is not due for 20 s more
    node.sweep()
    assert _seen(node, "j1", start + dt.timedelta(seconds=30))

    clock.advance(seconds=30)  # 70 s after the last housekeeping
    node.sweep()
    assert not _seen(node, "j1", start + dt.timedelta(seconds=30))


def test_a_clock_that_went_backwards_does_not_silence_housekeeping(
    clocked: tuple[Tether, SettableClock],
) -> None:
    node, clock = clocked
    node.sweep()
    earlier = clock.advance(hours=-1)
    assert not _seen(node, "j2", earlier - dt.timedelta(seconds=1))
    node.sweep()  # waiting for the old due time would mean an hour without housekeeping
    assert not _seen(node, "j2", earlier - dt.timedelta(seconds=1))


# -- reconciliation --


class FakeTarget:
    def __init__(self, drops: list[str] | None) -> None:
        self.drops = drops
        self.asked: list[list[str]] = []

    def reconcile(self, live_lease_ids: Callable[[Sequence[str]], set[str]]) -> list[str]:
        self.asked.append(sorted(live_lease_ids(["lse_missing"])))
        if self.drops is None:
            raise ProviderError("target unreachable")
        return self.drops


class FakeTargets:
    def __init__(self, targets: dict[str, FakeTarget]) -> None:
        self.targets = targets

    def kinds(self) -> dict[str, str]:
        return {name: "postgres" for name in self.targets}

    def provider(self, name: str) -> FakeTarget:
        return self.targets[name]


@pytest.fixture
def store() -> Iterator[Store]:
    s = open_store("memory://")
    yield s
    s.close()


def test_reconcile_goes_on_past_an_unreachable_target_and_audits_what_it_dropped(
    store: Store,
) -> None:
    key = b"k" * 32
    audit = AuditLog(lambda: key)
    targets = {
        "down": FakeTarget(None),
        "orders-db": FakeTarget(["tether_lse_1", "tether_lse_2"]),
        "clean": FakeTarget([]),
    }
    dropped = reconcile_targets(FakeTargets(targets), store, audit)
    assert dropped == {"orders-db": ["tether_lse_1", "tether_lse_2"], "clean": []}
    assert all(t.asked == [[]] for t in targets.values())  # no lease is live here
    with store.read() as tx:
        entries = tx.list_audit(0, 100)
    assert [(e.action, e.actor) for e in entries] == [("target.reconcile", "system:reconciler")]
    assert json.loads(entries[0].details) == {
        "target": "orders-db",
        "dropped": ["tether_lse_1", "tether_lse_2"],
    }
