"""Failed unseal attempts: limited per source, and tallied into summaries the audit log
records (one entry per window and source, not one per attempt)."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tether.barrier.errors import RateLimited

#: Failed unseal attempts one source may make in a window before it is refused.
UNSEAL_FAILURE_LIMIT = 10
#: Seconds a source's failure window lasts, from its first failure.
UNSEAL_FAILURE_WINDOW = 60.0
#: Sources tracked at once; past this the oldest window is closed early (and summarized).
UNSEAL_MAX_SOURCES = 10_000
#: The reason recorded for an attempt refused by the limit (its share is never read).
REFUSED_UNREAD = "refused unread: too many failed attempts from this source"


@dataclass(frozen=True, slots=True)
class UnsealFailures:
    """Failed unseal attempts from one source that the audit log has not yet recorded.

    Reasons are fixed error messages, never anything taken from a submitted share.
    """

    source: str
    #: Attempts this summary records (each failed attempt is in exactly one summary).
    count: int
    #: How many of `count` failed for each reason.
    reasons: Mapping[str, int]
    #: Failed attempts in the source's window so far, earlier summaries included.
    window_total: int
    #: The source is refused until its window ends.
    limited: bool
    #: Whole seconds until the window ends (0 once it has).
    retry_after: int
    #: The window has ended (or was dropped to bound memory): no more attempts join it.
    closed: bool


#: Receives summaries as they fall due; it writes them to the audit log.
FailureSink = Callable[[Sequence[UnsealFailures]], None]


class _Window:
    __slots__ = ("failures", "started", "total", "unrecorded")

    def __init__(self, started: float) -> None:
        self.started = started
        self.failures = 0  # attempts that were read and failed: what the limit counts
        self.total = 0  # every failed attempt, refused ones included
        self.unrecorded: dict[str, int] = {}  # reason -> attempts not yet summarized


class UnsealGuard:
    """Rate-limits failed unseal attempts per source and tallies them for the audit log.

    A source's window opens at its first failure and lasts `window` seconds; after
    `limit` failures in it, further attempts are refused unread until it ends. Instead of
    one audit entry per failure, a window yields a summary at its first failure, one when
    it reaches the limit, and one for the rest when it closes or is flushed, so the
    counts of a source's summaries add up to its failed attempts. At most `max_sources`
    windows are held: a new source past that closes the oldest window early.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        limit: int = UNSEAL_FAILURE_LIMIT,
        window: float = UNSEAL_FAILURE_WINDOW,
        max_sources: int = UNSEAL_MAX_SOURCES,
    ) -> None:
        self.clock, self.limit, self.window, self.max_sources = clock, limit, window, max_sources
        self._lock = threading.RLock()
        # Ordered by window start (and so by window end): ended windows are at the front.
        self._windows: OrderedDict[str, _Window] = OrderedDict()

    def __len__(self) -> int:
        return len(self._windows)

    @contextmanager
    def attempt(self, source: str, record: FailureSink | None = None) -> Iterator[None]:
        """Admit one attempt from `source` (see `check`), holding the guard until it is
        done, so concurrent attempts cannot overrun the limit."""
        with self._lock:
            self.check(source, record)
            yield

    def check(self, source: str, record: FailureSink | None = None) -> None:
        """Raise RateLimited (itself a failed attempt) if `source` used up its window."""
        with self._lock:
            now = self.clock()
            self._close_ended(now, record)
            window = self._windows.get(source)
            if window is None or window.failures < self.limit:
                return
            window.total += 1
            window.unrecorded[REFUSED_UNREAD] = window.unrecorded.get(REFUSED_UNREAD, 0) + 1
            retry_after = self._retry_after(window, now)
        raise RateLimited(
            f"too many failed unseal attempts from this address; try again in {retry_after} s",
            retry_after=retry_after,
        )

    def failed(self, source: str, reason: str, record: FailureSink | None = None) -> None:
        """Count a failed attempt from `source`; `reason` must be a fixed message."""
        with self._lock:
            now = self.clock()
            self._close_ended(now, record)
            window = self._windows.get(source)
            if window is None:
                window = self._windows[source] = _Window(now)
                while len(self._windows) > self.max_sources:
                    oldest = next(iter(self._windows))
                    self._emit(record, [(oldest, self._windows[oldest], True)], now)
                    del self._windows[oldest]
            window.failures += 1
            window.total += 1
            window.unrecorded[reason] = window.unrecorded.get(reason, 0) + 1
            if window.failures in (1, self.limit):
                self._emit(record, [(source, window, False)], now)

    def flush(self, record: FailureSink | None = None) -> None:
        """Summarize every failure not yet recorded; windows (and their limits) go on."""
        with self._lock:
            now = self.clock()
            self._close_ended(now, record)
            self._emit(record, [(s, w, False) for s, w in self._windows.items()], now)

    def _close_ended(self, now: float, record: FailureSink | None) -> None:
        ended = []
        for source, window in self._windows.items():
            if window.started + self.window > now:
                break
            ended.append((source, window, True))
        self._emit(record, ended, now)
        for source, _, _ in ended:
            del self._windows[source]

    def _emit(
        self, record: FailureSink | None, items: Sequence[tuple[str, _Window, bool]], now: float
    ) -> None:
        summaries = [
            UnsealFailures(
                source=source,
                count=sum(window.unrecorded.values()),
                reasons=dict(sorted(window.unrecorded.items())),
                window_total=window.total,
                limited=window.failures >= self.limit,
                retry_after=0 if closed else self._retry_after(window, now),
                closed=closed,
            )
            for source, window, closed in items
            if window.unrecorded
        ]
        if summaries and record is not None:
            record(summaries)  # if the audit log cannot be written, the tally is kept
        for _, window, _ in items:
            window.unrecorded.clear()

    def _retry_after(self, window: _Window, now: float) -> int:
        return max(1, math.ceil(window.started + self.window - now))
