"""Credentials issued and ended per hour (the dashboard's trend): the same on every backend."""

from __future__ import annotations

import datetime as dt

from tests.store.test_leases_contract import T0, _lease
from tether.model import LeaseState
from tether.store import Store

H = dt.timedelta(hours=1)


def test_issued_and_ended_leases_are_counted_in_their_hour(store: Store) -> None:
    with store.transaction() as tx:
        tx.insert_leases(
            [
                _lease("before", issued_at=T0 - 3 * H),
                _lease("a", issued_at=T0 + dt.timedelta(minutes=5)),
                _lease("b", issued_at=T0 + dt.timedelta(minutes=59, seconds=59)),
                _lease(
                    "c",
                    issued_at=T0 + H + dt.timedelta(minutes=1),
                    state=LeaseState.REVOKED,
                    ended_at=T0 + 2 * H + dt.timedelta(minutes=30),
                ),
                _lease(
                    "d",
                    issued_at=T0 - 3 * H,
                    state=LeaseState.EXPIRED,
                    ended_at=T0 + dt.timedelta(minutes=10),
                ),
                # Still being revoked: not dead yet, so not counted as ended.
                _lease(
                    "e",
                    issued_at=T0 - 3 * H,
                    state=LeaseState.REVOKING,
                    ended_at=T0 + dt.timedelta(minutes=20),
                ),
            ]
        )
    with store.read() as tx:
        assert tx.lease_activity(T0) == [(T0, 2, 1), (T0 + H, 1, 0), (T0 + 2 * H, 0, 1)]
        assert tx.lease_activity(T0 + 3 * H) == []
