"""MemoryJtiStore: each (issuer, jti) once, atomically, and forgotten after expiry."""

from __future__ import annotations

import datetime as dt
import threading

from tests.attest.oidc_issuer import Clock
from tether.attest import JtiStore, MemoryJtiStore


def test_a_jti_is_remembered_once() -> None:
    clock = Clock()
    store = MemoryJtiStore(clock=clock)
    later = clock.now + dt.timedelta(minutes=5)
    assert store.remember("https://a", "j1", later)
    assert not store.remember("https://a", "j1", later)
    assert not store.remember("https://a", "j1", later + dt.timedelta(hours=1))
    # Per issuer: another issuer's j1 is another token.
    assert store.remember("https://b", "j1", later)
    assert store.remember("https://a", "j2", later)
    assert len(store) == 3


def test_entries_are_forgotten_after_they_expire() -> None:
    clock = Clock()
    store = MemoryJtiStore(clock=clock)
    for minutes in (1, 2, 3):
        store.remember("https://a", f"j{minutes}", clock.now + dt.timedelta(minutes=minutes))
    clock.advance(minutes=2)
    assert len(store) == 1
    assert store.remember("https://a", "j1", clock.now + dt.timedelta(minutes=1))
    assert not store.remember("https://a", "j3", clock.now + dt.timedelta(minutes=1))
    clock.advance(hours=1)
    assert len(store) == 0


def test_concurrent_remembers_have_exactly_one_winner() -> None:
    clock = Clock()
    store = MemoryJtiStore(clock=clock)
    later = clock.now + dt.timedelta(minutes=5)
    wins: list[bool] = []
    barrier = threading.Barrier(32)

    def attempt() -> None:
        barrier.wait()
        wins.append(store.remember("https://a", "same", later))

    threads = [threading.Thread(target=attempt) for _ in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wins.count(True) == 1
    assert len(wins) == 32


def test_memory_store_satisfies_the_protocol() -> None:
    store: JtiStore = MemoryJtiStore()
    assert store.remember("i", "j", dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1))
