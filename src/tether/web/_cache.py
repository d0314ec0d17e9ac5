"""Read models the pages share, kept in memory so that a page with 100,000 identities
renders in milliseconds: computed once, served from memory, recomputed at once when their
key changes (a new estate version) and in the background once older than their age."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("tether.web")


class Refreshed(Generic[T]):
    """`compute()`'s value. A changed `key()` recomputes before answering (what was
    applied shows at once); an old value is answered while a thread recomputes it."""

    def __init__(
        self,
        compute: Callable[[], T],
        max_age: float,
        key: Callable[[], Hashable] = lambda: None,
    ) -> None:
        self._compute, self._max_age, self._key = compute, max_age, key
        self._lock = threading.Lock()
        self._value: tuple[Hashable, float, T] | None = None
        self._refreshing = False

    def peek(self) -> T | None:
        """The value if there is one, never waiting: a slow value (a pass over the whole
        audit log) is computed in the background, and None answered meanwhile."""
        held = self._value
        if held is None or time.monotonic() - held[1] > self._max_age:
            self._start(None if held is None else held[0])
        return None if held is None else held[2]

    def _start(self, key: Hashable) -> None:
        if not self._refreshing:
            self._refreshing = True
            threading.Thread(target=self._refresh, args=(key,), daemon=True).start()

    def get(self) -> T:
        key = self._key()
        held = self._value
        if held is None or held[0] != key:
            with self._lock:
                held = self._value
                if held is None or held[0] != key:
                    held = (key, time.monotonic(), self._compute())
                    self._value = held
            return held[2]
        if time.monotonic() - held[1] > self._max_age:
            self._start(key)
        return held[2]

    def forget(self) -> None:
        """Recompute on the next read (after a change made from the dashboard itself)."""
        with self._lock:
            self._value = None

    def _refresh(self, key: Hashable) -> None:
        try:
            value = self._compute()
            with self._lock:
                if self._value is None or self._value[0] == key or key is None:
                    self._value = (key, time.monotonic(), value)
        except Exception:  # a failed refresh keeps the old value; the next read retries
            log.exception("refreshing a dashboard read model failed")
        finally:
            self._refreshing = False


_PER_NODE: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_PER_NODE_LOCK = threading.Lock()


def per_node(node: Any, name: str, make: Callable[[], T]) -> T:
    """One `make()` per node and name (a node's read models live as long as it does)."""
    with _PER_NODE_LOCK:
        held = _PER_NODE.setdefault(node, {})
        if name not in held:
            held[name] = make()
        value: T = held[name]
        return value
