"""The X509-SVIDs revoked before their end: what the CRL lists and what mTLS attestation
by an SVID of the own trust domain refuses.

Read from the store (revoked x509-svid leases not yet past their end) and kept in memory:
rebuilt after a lease ends (on this node or, through the feed, another) and at most
`max_age` after the last build whatever happens, so a missed event costs a bounded delay.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping
from types import MappingProxyType

from tether.model import LeaseState
from tether.spiffe._svid import svid_serial
from tether.store import LeaseFilter, Store


class RevokedSvids:
    """Thread-safe; `revoked()` is a dict lookup while the list is current."""

    def __init__(
        self,
        store: Store,
        clock: Callable[[], dt.datetime],
        *,
        max_age: dt.timedelta = dt.timedelta(seconds=30),
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_age = max_age
        self._lock = threading.Lock()
        self._serials: Mapping[int, dt.datetime] | None = None
        self._built_at: dt.datetime | None = None
        #: Bumped by every invalidation: a build that raced one is not kept.
        self._generation = 0

    def invalidate(self, *_args: object) -> None:
        with self._lock:
            self._generation += 1
            self._serials = None

    def serials(self) -> Mapping[int, dt.datetime]:
        """Revoked serial -> when it was revoked, for SVIDs still inside their life."""
        now = self._clock()
        with self._lock:
            serials, built_at, generation = self._serials, self._built_at, self._generation
        if serials is not None and built_at is not None and now - built_at < self._max_age:
            return serials
        built = self._build(now)
        with self._lock:
            if self._generation == generation:
                self._serials, self._built_at = built, now
        return built

    def revoked(self, serial: int) -> bool:
        return serial in self.serials()

    def _build(self, now: dt.datetime) -> Mapping[int, dt.datetime]:
        out: dict[int, dt.datetime] = {}
        where = LeaseFilter(
            states=(LeaseState.REVOKING, LeaseState.REVOKED), provider="x509-svid", limit=1000
        )
        with self._store.read() as tx:
            while True:
                page = tx.find_leases(where)
                for lease in page:
                    if lease.expires_at > now:
                        out[svid_serial(lease.id)] = lease.ended_at or now
                if len(page) < where.limit:
                    break
                where = LeaseFilter(
                    states=where.states, provider=where.provider, after_id=page[-1].id
                )
        return MappingProxyType(out)
