"""Polling for what another node (or process) must see within a bound."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

#: The issue's bound: a change committed on one node is in force on another within 1 s.
BOUND = 1.0


def within(
    condition: Callable[[], bool], limit: float = BOUND, explain: Callable[[], str] = str
) -> float:
    """Seconds until `condition()` holds, polled; fails once past `limit`."""
    started = time.monotonic()
    while not condition():
        elapsed = time.monotonic() - started
        if elapsed > limit:
            pytest.fail(f"not reached after {elapsed:.2f} s (limit {limit} s) {explain()}")
        time.sleep(0.01)
    return time.monotonic() - started
