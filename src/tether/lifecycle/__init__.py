"""The background scheduler: the lifecycle sweep, revocation retries, target
reconciliation and the rewrap after a keyring rotation.

`Lifecycle` owns the two workers. The sweep (`Sweep`) runs every `sweep_interval` and
whenever something may have ended a credential (an estate change, a revocation that
must reach a target); the rewrap worker runs after unseal and rotation, and every
minute otherwise. Every decision about time reads the node's clock. Each pass goes
through a gate, so that of the processes sharing a database only the leader works.
"""

from __future__ import annotations

from tether.lifecycle._reconcile import Reconcilable, Targets, reconcile_targets
from tether.lifecycle._scheduler import Gate, Lifecycle
from tether.lifecycle._sweep import Sweep, SweepParts, SweepSchedule
from tether.lifecycle._worker import LifecycleWorker

__all__ = [
    "Gate",
    "Lifecycle",
    "LifecycleWorker",
    "Reconcilable",
    "Sweep",
    "SweepParts",
    "SweepSchedule",
    "Targets",
    "reconcile_targets",
]
