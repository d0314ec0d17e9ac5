"""Exactly one runner of background work across every process and node on one database.

A leadership lease is a row (`leadership`): taken when free or expired, renewed every
second, and taken over once its holder has not renewed for `ttl` seconds (by the
database's clock). Each change of holder increments its term, the fencing token: every
write transaction the background work opens checks, inside itself, that this process
still holds the lease in the term it started with, so a leader deposed mid-pass (a
pause, a partition) has its write rolled back instead of doing the work a second time.

The check needs no change to the services that do the work: `FencedStore` is the node's
store, and a transaction opened while a fence is set (by `Leadership.run`, in the
background worker's thread) is checked; the request path sets none and is never fenced.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from tether.cluster.errors import Deposed
from tether.model import AuditRecord
from tether.store import Store, Tx, WakeUps

T = TypeVar("T")

log = logging.getLogger("tether.cluster")

#: A holder that has not renewed for this long (database clock) is taken over.
LEASE_TTL = 5.0
#: How often the holder renews, and others try to take over.
RENEW_EVERY = 1.0
#: The lease of the background work (one name: every kind of it runs on one leader).
BACKGROUND = "background"


@dataclass(frozen=True, slots=True)
class Fence:
    name: str
    holder: str
    term: int


_FENCE: ContextVar[Fence | None] = ContextVar("tether_cluster_fence", default=None)


class FencedStore:
    """The node's store. A transaction opened under a fence (`Leadership.run`) first
    checks, in itself, that the fence still holds, or raises `Deposed` and rolls back."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def inner(self) -> Store:
        return self._store

    def migrate(self) -> None:
        self._store.migrate()

    @contextmanager
    def transaction(self) -> Iterator[Tx]:
        fence = _FENCE.get()
        with self._store.transaction() as tx:
            if fence is not None and not tx.holds_leadership(fence.name, fence.holder, fence.term):
                raise Deposed(f"no longer the leader of {fence.name!r} (term {fence.term})")
            yield tx

    def read(self) -> AbstractContextManager[Tx]:
        return self._store.read()

    @property
    def single_process(self) -> bool:
        return self._store.single_process

    def commit_together(self, work: Callable[[Tx], T]) -> T:
        # The request path's group commit: never under a fence.
        return self._store.commit_together(work)

    def iter_audit(self, batch: int = 20_000) -> Iterator[AuditRecord]:
        return self._store.iter_audit(batch)

    def close(self) -> None:
        self._store.close()

    def wake_ups(self) -> WakeUps:
        return self._store.wake_ups()

    def __getattr__(self, name: str) -> Any:
        # What a backend offers beyond the port (an engine, a URL) stays reachable.
        return getattr(self._store, name)


def _holder_id() -> str:
    """Unique per process and start: a restarted process is a new holder (new term)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Leadership:
    """Campaigns for the lease `name` on a thread of its own (a long pass of background
    work does not let the lease lapse), and gates the background work on holding it."""

    def __init__(
        self,
        store: Store,
        *,
        may_lead: Callable[[], bool] = lambda: True,
        name: str = BACKGROUND,
        ttl: float = LEASE_TTL,
        renew_every: float = RENEW_EVERY,
    ) -> None:
        self._store = store
        #: False (a sealed node: it could write no audit entry) gives the lease up.
        self._may_lead = may_lead
        self.name = name
        self.holder = _holder_id()
        self._ttl = ttl
        self._renew_every = renew_every
        self._term: int | None = None
        self._valid_until = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Called (on the campaign thread) when this process takes the lease in a new term.
        self.on_elected: list[Callable[[], None]] = []
        #: Run fenced after every renewal while leading (cheap, self-limiting chores).
        self.duties: list[Callable[[], None]] = []

    # -- state --
    def fence(self) -> Fence | None:
        """The fence to write under, or None when this process does not lead now."""
        with self._lock:
            if self._term is None or time.monotonic() >= self._valid_until:
                return None
            return Fence(self.name, self.holder, self._term)

    @property
    def leading(self) -> bool:
        return self.fence() is not None

    # -- the gate --
    def run(self, work: Callable[[], None]) -> None:
        """Run `work` with its write transactions fenced, if this process leads; else
        nothing (another process does it)."""
        fence = self.fence()
        if fence is None:
            return
        token = _FENCE.set(fence)
        try:
            work()
        except Deposed:
            log.info("deposed mid-pass; the new leader carries on", extra={"term": fence.term})
        finally:
            _FENCE.reset(token)

    # -- campaigning --
    def campaign(self) -> None:
        """One round: take or renew the lease, or give it up when this node may not lead."""
        if not self._may_lead():
            self.release()
            return
        started = time.monotonic()
        with self._store.transaction() as tx:
            term = tx.claim_leadership(self.name, self.holder, self._ttl)
        with self._lock:
            elected = term is not None and term != self._term
            self._term = term
            # Measured from before the claim: never later than the database's expiry.
            self._valid_until = started + self._ttl if term is not None else 0.0
        if elected:
            log.info("leading the background work", extra={"term": term})
            for callback in self.on_elected:
                callback()
        if term is not None:
            for duty in self.duties:
                self.run(duty)

    def release(self) -> None:
        with self._lock:
            held, self._term, self._valid_until = self._term is not None, None, 0.0
        if held:
            with self._store.transaction() as tx:
                tx.release_leadership(self.name, self.holder)
            log.info("gave up the background work")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.release()  # a successor need not wait for the lease to expire
        except Exception:  # stopping goes on: the lease then simply expires
            log.exception("could not give up the background work")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.campaign()
            except Exception:  # the database may be away; the next round retries
                log.exception("leadership round failed; will retry")
            self._stop.wait(self._renew_every)
