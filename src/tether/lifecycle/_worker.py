"""A background thread that runs one job every `interval` seconds and whenever woken
(woken passes no closer together than `min_gap`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("tether.lifecycle")


class LifecycleWorker:
    """Runs `work` at start, then every `interval` seconds and whenever woken, until
    stopped. A pass that fails is logged and the next one retries: the worker survives
    anything, because what it does (ending credentials, re-encrypting) must not stop.

    `min_gap` paces wake-ups: a pass woken sooner than that after the last one ended waits
    out the rest. Work whose own pass causes the next wake-up (governance: a pass flushes
    usage, which marks identities for evaluation) would otherwise run back to back under
    load, taking the GIL from the requests it is there to govern."""

    def __init__(
        self,
        work: Callable[[], None],
        interval: float,
        name: str = "lifecycle",
        *,
        min_gap: float = 0.0,
    ) -> None:
        self._work = work
        self._interval = interval
        self._min_gap = min(min_gap, interval)
        self._name = name
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """True once `stop` was called: long work checks it between steps."""
        return self._stop.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run the next pass now rather than at the next interval."""
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._work()
            except Exception:  # the worker must survive anything; the next pass retries
                log.exception("background work failed; will retry", extra={"worker": self._name})
            ended = time.monotonic()
            if self._wake.wait(self._interval):
                # What wakes it meanwhile is done in this same pass.
                rest = self._min_gap - (time.monotonic() - ended)
                if rest > 0:
                    self._stop.wait(rest)
            self._wake.clear()
