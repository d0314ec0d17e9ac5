"""One pass of lifecycle work, and the cadence of the parts that need not run every pass.

Every pass ends what expired, what outlived its task and what lost its justification,
retries failed revocations and settles interrupted issuances; each step is an indexed
query over a bounded batch. Less often: static-secret rotations and overlaps, then
housekeeping (forgetting seen token ids, signing-key rotation, target reconciliation).
All times come from the node's clock, so a test that moves the clock moves the sweep.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from tether.barrier import Barrier
from tether.estate import EstateViewHolder
from tether.lease import LeaseService
from tether.providers import SigningKeys
from tether.static import StaticSecrets
from tether.store import Store


@dataclass(frozen=True, slots=True)
class SweepParts:
    """What a sweep works on: the node's services, wired by the composition root."""

    store: Store
    barrier: Barrier
    view: EstateViewHolder
    leases: LeaseService
    statics: StaticSecrets
    signing_keys: SigningKeys
    #: Reconcile every target against the live leases (`reconcile_targets`, bound).
    reconcile: Callable[[], object]
    #: End the agent runs whose principal no longer justifies them (the acting-for
    #: principal is one more justification); returns how many.
    end_unjustified_runs: Callable[[], int] = lambda: 0


@dataclass(frozen=True, slots=True)
class SweepSchedule:
    #: A lease still `pending` this long was interrupted by a crash: recovery revokes it.
    pending_grace: dt.timedelta = dt.timedelta(seconds=60)
    #: How often static secrets are swept (overlaps ended, rotations due).
    statics_every: dt.timedelta = dt.timedelta(seconds=1)
    #: How often seen token ids are forgotten, signing keys rotated, targets reconciled.
    housekeeping_every: dt.timedelta = dt.timedelta(seconds=60)


class _Every:
    """Due at most once per `period` of clock time. A clock that went backwards (an NTP
    step, a test) makes it due at once rather than silent until the clock catches up."""

    def __init__(self, period: dt.timedelta) -> None:
        self._period = period
        self._last: dt.datetime | None = None

    def due(self, now: dt.datetime) -> bool:
        if self._last is not None and self._last <= now < self._last + self._period:
            return False
        self._last = now
        return True


class Sweep:
    """Callable: one pass (the worker runs it every interval and whenever woken)."""

    def __init__(
        self,
        parts: SweepParts,
        schedule: SweepSchedule,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self._parts = parts
        self._schedule = schedule
        self._clock = clock
        self._statics = _Every(schedule.statics_every)
        self._housekeeping = _Every(schedule.housekeeping_every)

    def __call__(self) -> None:
        p = self._parts
        p.view.refresh_if_changed()
        while p.leases.expire_due():
            pass
        p.leases.end_due_tasks()
        p.leases.revoke_unjustified()
        p.end_unjustified_runs()
        p.leases.retry_revocations()
        p.leases.settle_stale_pending(self._schedule.pending_grace)
        if not p.barrier.sealed and self._statics.due(self._clock()):
            p.statics.sweep()
        if self._housekeeping.due(self._clock()):
            with p.store.transaction() as tx:
                tx.forget_jti_before(self._clock())
            if not p.barrier.sealed:
                p.signing_keys.ensure_current()
                p.reconcile()
