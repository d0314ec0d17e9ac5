"""Leases this process knows have ended (a minimal stand-in: the pipeline's own version
replaces it; the change feed calls only `add` and `heartbeat`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable


class EndedLeases:
    """Leases this process knows have ended, so introspection/exchange of Tether's own
    tokens can answer from memory; trusted only while the feed is current."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._as_of: float | None = None
        self._lock = threading.Lock()

    def add(self, lease_ids: Iterable[str]) -> None:
        with self._lock:
            self._ids.update(lease_ids)

    def heartbeat(self, as_of: float) -> None:
        """The feed has applied every event committed before monotonic time `as_of`."""
        with self._lock:
            if self._as_of is None or as_of > self._as_of:
                self._as_of = as_of

    def __contains__(self, lease_id: object) -> bool:
        with self._lock:
            return lease_id in self._ids

    def current(self, max_age: float = 1.0) -> bool:
        """Whether the last heartbeat is at most `max_age` seconds old."""
        as_of = self._as_of
        return as_of is not None and time.monotonic() - as_of <= max_age
