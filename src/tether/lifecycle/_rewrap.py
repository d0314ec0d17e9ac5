"""Re-encryption after a keyring rotation: records written under older terms move to the
active one, a batch per transaction, until none is left."""

from __future__ import annotations

from collections.abc import Callable

from tether.barrier import Barrier


def rewrap_pending(barrier: Barrier, stopping: Callable[[], bool]) -> None:
    """Rewrap until nothing is left under an older term, the barrier seals or the node stops."""
    while not stopping() and not barrier.sealed:
        if barrier.rewrap() == 0:
            return
