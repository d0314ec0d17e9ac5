"""Replay protection: remembering the `jti` of single-use tokens until they expire."""

from __future__ import annotations

import datetime as dt
import heapq
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from tether._internal.timeutil import utcnow

if TYPE_CHECKING:
    from tether.store import Store


class JtiStore(Protocol):
    """Where seen token ids live. One replica: memory. Several: a shared store."""

    def remember(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool:
        """Record `jti` for `issuer` until `expires_at`; False if already recorded.

        Must be atomic: of two concurrent calls with the same pair, exactly one wins.
        """
        ...


class MemoryJtiStore:
    """A thread-safe, in-process JtiStore that forgets entries once they expire.

    Memory is bounded by the tokens alive at once, not by all tokens ever seen: an
    expired token is refused on its `exp` anyway, so its id need not be kept.
    """

    def __init__(self, clock: Callable[[], dt.datetime] = utcnow) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], dt.datetime] = {}
        # Min-heap of expiries, so forgetting costs O(log n) per entry, not a full scan.
        self._expiries: list[tuple[dt.datetime, str, str]] = []

    def remember(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool:
        key = (issuer, jti)
        with self._lock:
            now = self._clock()
            self._forget_expired(now)
            if key in self._seen:
                return False
            self._seen[key] = expires_at
            heapq.heappush(self._expiries, (expires_at, issuer, jti))
            return True

    def __len__(self) -> int:
        with self._lock:
            self._forget_expired(self._clock())
            return len(self._seen)

    def _forget_expired(self, now: dt.datetime) -> None:
        while self._expiries and self._expiries[0][0] <= now:
            _, issuer, jti = heapq.heappop(self._expiries)
            self._seen.pop((issuer, jti), None)


class StoreJtiStore:
    """Single-use attestation token ids, remembered in the shared store (all replicas)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def remember(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool:
        with self._store.transaction() as tx:
            return tx.remember_jti(issuer, jti, expires_at)
