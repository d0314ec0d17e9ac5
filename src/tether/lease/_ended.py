"""What this process knows about live leases without asking the store: the leases it has
seen live (and their tasks), and the ends it has been told about since.

A lease never comes back once it has ended, and a task ends only with its leases (they
are revoked in the same transaction), so a remembered live lease stays right until an
end of it is announced. Ends reach this process from its own commits at once and from
other processes and nodes through the cluster's event feed. Memory is trusted only
while that feed is current (it read every event committed up to a moment at most
`max_age` seconds ago); otherwise every lookup goes to the store, as if nothing were
remembered.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from tether.model import Lease, Task

#: Live leases remembered per process (least recently used go first): a lease and its
#: task are well under a kilobyte each, so this stays within a few tens of megabytes.
CAPACITY = 20_000
#: Recently ended lease ids kept for `in` (diagnostics, tests): the cache itself needs
#: none, since an end evicts the lease.
_RECENT_ENDS = 100_000


class EndedLeases:
    """Ends of leases as this process learns them, and the live leases it remembers."""

    def __init__(
        self,
        *,
        standalone: bool = False,
        max_age: float = 1.0,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Standalone: this process is the store's only writer (the in-memory store), so
        # its own commits are every end there is.
        self._standalone = standalone
        self._max_age = max_age
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._live: OrderedDict[str, tuple[Lease, Task | None]] = OrderedDict()
        self._keys_of: dict[str, list[str]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._generation = 0
        self._fresh_as_of: float | None = None

    # -- what the feed (and this process's own commits) tell it --
    def add(self, lease_ids: Iterable[str]) -> None:
        """These leases ended: forget them, and refuse to remember them again."""
        with self._lock:
            self._generation += 1
            for lease_id in lease_ids:
                for key in self._keys_of.pop(lease_id, ()):
                    self._live.pop(key, None)
                self._recent[lease_id] = None
            while len(self._recent) > _RECENT_ENDS:
                self._recent.popitem(last=False)

    def heartbeat(self, as_of: float) -> None:
        """The feed has applied every event committed before monotonic time `as_of`."""
        with self._lock:
            if self._fresh_as_of is None or as_of > self._fresh_as_of:
                self._fresh_as_of = as_of

    def current(self, max_age: float | None = None) -> bool:
        """Whether memory may answer: every end committed more than `max_age` seconds ago
        is known here."""
        if self._standalone:
            return True
        fresh = self._fresh_as_of
        limit = self._max_age if max_age is None else max_age
        return fresh is not None and self._clock() - fresh <= limit

    def __contains__(self, lease_id: object) -> bool:
        with self._lock:
            return lease_id in self._recent

    # -- the live leases it remembers --
    @property
    def generation(self) -> int:
        """Take this before reading a lease from the store, and give it to `remember`."""
        return self._generation

    def remember(self, key: str, lease: Lease, task: Task | None, generation: int) -> None:
        """Remember a live lease read from the store under `key` (its token's lookup key),
        unless an end was announced since the read began (it may be this lease's)."""
        with self._lock:
            if generation != self._generation or lease.id in self._recent:
                return
            self._live[key] = (lease, task)
            self._live.move_to_end(key)
            keys = self._keys_of.setdefault(lease.id, [])
            if key not in keys:
                keys.append(key)
            while len(self._live) > self._capacity:
                _, (old, _task) = self._live.popitem(last=False)
                for other in self._keys_of.pop(old.id, ()):
                    self._live.pop(other, None)

    def recall(self, key: str) -> tuple[Lease, Task | None] | None:
        """The live lease remembered under `key`, if memory may answer at all."""
        if not self.current():
            return None
        with self._lock:
            hit = self._live.get(key)
            if hit is not None:
                self._live.move_to_end(key)
            return hit
