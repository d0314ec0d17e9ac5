from __future__ import annotations

import pytest

from tether.barrier import Barrier, encode_share
from tether.store import Store


@pytest.fixture
def shares(store: Store, barrier: Barrier) -> list[str]:
    """Initialize with 5 shares, threshold 3, and seal: the state after `tether init`.

    `barrier` is each test module's own (with or without a test clock)."""
    with store.transaction() as tx:
        parts = barrier.initialize(tx, shares=5, threshold=3)
    barrier.seal()
    return [encode_share(p) for p in parts]
