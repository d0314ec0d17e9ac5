"""The usage recorder: uses buffered per key, flushed as one rollup each, added to what
is stored (by this or any other process)."""

from __future__ import annotations

import datetime as dt

from tether.govern import UsageRecorder
from tether.model import Usage
from tether.store import Store

NOW = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)


def _use(minutes: int, source: str, **fields: str) -> Usage:
    given: dict[str, str] = {"credential": "lse_1", "entitlement": "api-read", **fields}
    return Usage(
        "nhi-1",
        NOW + dt.timedelta(minutes=minutes),
        "introspect",
        source=source,
        scopes=("read",),
        **given,  # type: ignore[arg-type]
    )


def test_uses_of_one_key_flush_as_one_rollup_added_to_the_stored_one(store: Store) -> None:
    first, second = UsageRecorder(store), UsageRecorder(store)  # two processes
    for minutes, source in ((5, "10.0.0.1"), (1, "10.0.0.2"), (9, "10.0.0.1")):
        first.record(_use(minutes, source))
    second.record(_use(30, "10.0.0.3", user_agent="curl/8"))
    second.record(_use(0, "10.0.0.3", entitlement="orders-api"))  # another key
    touched: list[set[str]] = []
    first.on_flushed.append(touched.append)
    assert first.pending() == 1 and second.pending() == 2
    assert first.flush() == 1 and second.flush() == 2
    assert first.pending() == 0 and first.flush() == 0
    with store.read() as tx:
        rollups = {r.entitlement: r for r in tx.usage_for(["nhi-1"], NOW.date())}
    merged = rollups["api-read"]
    assert merged.count == 4
    assert merged.first_seen == NOW + dt.timedelta(minutes=1)
    assert merged.last_seen == NOW + dt.timedelta(minutes=30)
    assert merged.facets["source"] == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    assert merged.facets["user_agent"] == ("curl/8",)
    assert merged.facets["scope"] == ("read",)
    assert rollups["orders-api"].count == 1
    assert touched == [{"nhi-1"}]


def test_the_buffer_flushes_itself_when_it_holds_its_bound_of_keys(store: Store) -> None:
    recorder = UsageRecorder(store, max_keys=3)
    for n in range(3):
        recorder.record(_use(0, "10.0.0.1", entitlement=f"p-{n}"))
    assert recorder.pending() == 0  # the third key filled it: written at once
    with store.read() as tx:
        assert len(tx.usage_for(["nhi-1"], NOW.date())) == 3
