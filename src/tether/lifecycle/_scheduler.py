"""The node's two background workers: the sweep and the rewrap."""

from __future__ import annotations

from collections.abc import Sequence

from tether.barrier import Barrier
from tether.lifecycle._rewrap import rewrap_pending
from tether.lifecycle._sweep import Sweep
from tether.lifecycle._worker import LifecycleWorker
from tether.model import Lease, LeaseState

#: Without a wake-up (unseal, rotation), the rewrap worker still looks this often.
_REWRAP_INTERVAL = 60.0


class Lifecycle:
    """The node's background work: a sweep worker and a rewrap worker."""

    def __init__(self, sweep: Sweep, barrier: Barrier, sweep_interval: float) -> None:
        self.sweep = sweep
        self.worker = LifecycleWorker(sweep, interval=sweep_interval)
        self.rewrapper = LifecycleWorker(
            lambda: rewrap_pending(barrier, lambda: self.rewrapper.stopping),
            interval=_REWRAP_INTERVAL,
            name="rewrap",
        )

    def wake(self) -> None:
        """Sweep now rather than at the next interval."""
        self.worker.wake()

    def leases_ended(self, ended: Sequence[Lease]) -> None:
        """External revocations (sessions to terminate) start at once, not next sweep."""
        if any(lease.state is LeaseState.REVOKING for lease in ended):
            self.worker.wake()

    def start(self) -> None:
        # The rewrap worker's first pass finishes any rewrap a previous process left behind.
        self.rewrapper.start()
        self.worker.start()

    def rewrap_soon(self) -> None:
        self.rewrapper.wake()

    def stop(self) -> None:
        self.worker.stop()
        self.rewrapper.stop(timeout=5)
