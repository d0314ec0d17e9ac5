"""The change feed: every process applies every node's changes to what it caches.

A change that others cache is published in the transaction that makes it (`Tx.publish`),
so the event exists exactly when the change does. Each process runs one `Feed` thread
that reads the events after the last one it applied, in order, and calls the handlers
subscribed to each kind (its own events too: every handler is idempotent). It reads at
least every `poll` seconds, and at once when PostgreSQL notifies a commit that published.

After each read that reached the newest event, the feed beats: "every event committed
before monotonic time t is applied", t taken before the read. A cache that answers from
memory (ended leases) trusts itself only while the beats are recent.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from tether._internal.timeutil import utcnow
from tether.store import ClusterEvent, Store

log = logging.getLogger("tether.cluster")

Handler = Callable[[Mapping[str, Any]], None]

#: The longest a change waits for a process that missed its notification.
POLL_SECONDS = 0.25
#: Events read per query.
BATCH = 1000
#: Events older than this are pruned by the leader; a process that fell further behind
#: than this reloads everything it caches instead.
KEEP = dt.timedelta(hours=1)
#: How often the leader prunes.
PRUNE_EVERY = dt.timedelta(minutes=1)
#: A failing pass is logged at most this often (it is retried every poll).
_LOG_EVERY = 30.0


class Feed:
    """Reads the events table in order and applies each event to its subscribers."""

    def __init__(self, store: Store, *, poll: float = POLL_SECONDS, keep: dt.timedelta = KEEP):
        self._store = store
        self._poll = poll
        self._keep = keep
        # Taken when the node is built, before it loads what it caches: whatever commits
        # after this is applied, whatever before is in what it loaded.
        with store.read() as tx:
            self._seq = tx.events_head()
        self._handlers: dict[str, list[Handler]] = {}
        #: Called with t after every pass that applied everything committed before t.
        self.on_heartbeat: list[Callable[[float], None]] = []
        #: Called when events were missed (pruned before this process read them): reload
        #: everything cached. Beats stop then: a set of ended leases cannot be rebuilt.
        self.on_resync: list[Callable[[], None]] = []
        self._complete = True
        self._pass_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pruned_at: dt.datetime | None = None

    @property
    def seq(self) -> int:
        """The last event applied."""
        return self._seq

    def subscribe(self, kind: str, handler: Handler) -> None:
        self._handlers.setdefault(kind, []).append(handler)

    # -- one pass --
    def poll_once(self) -> bool:
        """Apply what is committed now; True when it reached the newest event. A handler
        that fails leaves its event to be applied again on the next pass."""
        with self._pass_lock:
            started = time.monotonic()
            with self._store.read() as tx:
                head = tx.events_head()
                events = tx.events_after(self._seq, BATCH)
            if (events and events[0].seq > self._seq + 1) or (not events and head > self._seq):
                self._missed(events[0].seq - 1 if events else head)
            for event in events:
                self._apply(event)
                self._seq = event.seq
            at_head = len(events) < BATCH
            if at_head and self._complete:
                for beat in self.on_heartbeat:
                    beat(started)
            return at_head

    def _apply(self, event: ClusterEvent) -> None:
        for handler in self._handlers.get(event.kind, ()):
            handler(event.data)

    def _missed(self, up_to: int) -> None:
        log.error(
            "change feed fell behind past the pruned events; reloading every cache "
            "(ended leases are read from the database until this process restarts)",
            extra={"applied": self._seq, "missed_up_to": up_to},
        )
        self._complete = False
        for resync in self.on_resync:
            resync()
        self._seq = up_to

    # -- pruning (the leader's chore) --
    def prune(self) -> None:
        now = utcnow()
        if self._pruned_at is not None and self._pruned_at <= now < self._pruned_at + PRUNE_EVERY:
            return
        with self._store.transaction() as tx:
            tx.prune_events(now - self._keep)
        self._pruned_at = now

    # -- the thread --
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        wake_ups = self._store.wake_ups()
        logged = 0.0
        try:
            while not self._stop.is_set():
                try:
                    at_head = self.poll_once()
                except Exception:  # the database may be away, a handler may fail: retry
                    at_head = True
                    if time.monotonic() - logged > _LOG_EVERY:
                        logged = time.monotonic()
                        log.exception("change feed pass failed; will retry")
                if at_head:
                    wake_ups.wait(self._poll)
        finally:
            wake_ups.close()
