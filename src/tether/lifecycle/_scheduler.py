"""The node's two background workers: the sweep and the rewrap."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tether.barrier import Barrier
from tether.lifecycle._rewrap import rewrap_pending
from tether.lifecycle._sweep import Sweep
from tether.lifecycle._worker import LifecycleWorker
from tether.model import Lease, LeaseState

#: Without a wake-up (unseal, rotation), the rewrap worker still looks this often.
_REWRAP_INTERVAL = 60.0

#: Runs one pass of background work, or skips it: where several processes share a
#: database, only the one that leads runs it (tether.cluster.Leadership.run).
Gate = Callable[[Callable[[], None]], None]


def _ungated(work: Callable[[], None]) -> None:
    work()


class Lifecycle:
    """The node's background work: a sweep worker and a rewrap worker, each pass
    through `gate` (every process starts both; the gate lets one of them work)."""

    def __init__(
        self, sweep: Sweep, barrier: Barrier, sweep_interval: float, gate: Gate = _ungated
    ) -> None:
        self.sweep = sweep
        self.worker = LifecycleWorker(lambda: gate(sweep), interval=sweep_interval)
        self.rewrapper = LifecycleWorker(
            lambda: gate(lambda: rewrap_pending(barrier, lambda: self.rewrapper.stopping)),
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
