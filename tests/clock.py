"""A clock tests set and move: `Tether(settings, clock=clock)` reads the time from it."""

from __future__ import annotations

import datetime as dt

from tether._internal.timeutil import utcnow


class SettableClock:
    """Starts at the real time (so real attestation tokens and certificates still fit)
    and moves only when told."""

    def __init__(self, now: dt.datetime | None = None) -> None:
        self.now = now or utcnow()

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> dt.datetime:
        self.now += dt.timedelta(**delta)
        return self.now
