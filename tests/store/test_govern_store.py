"""Usage rollups and governance records: the same contract on memory, SQLite, PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.services import throwaway_postgres_database
from tests.store.test_leases_contract import _lease
from tests.store.test_store_contract import _identity
from tether.store import (
    USAGE_DISTINCT_CAP,
    GovernFilter,
    GovernRecord,
    Store,
    StoreError,
    UsageRollup,
    merge_rollups,
    open_store,
)
from tether.store._sql import tables as t
from tether.store._sql._engine import _engine_url

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = T0.date()


def _at(hours: float) -> dt.datetime:
    return T0 + dt.timedelta(hours=hours)


def _rollup(identity_id: str = "svc", day: dt.date = DAY, **kw: object) -> UsageRollup:
    fields: dict[str, object] = {
        "identity_id": identity_id,
        "day": day,
        "first_seen": T0,
        "last_seen": T0,
    }
    fields.update(kw)
    return UsageRollup(**fields)  # type: ignore[arg-type]


def _record(record_id: str, **kw: object) -> GovernRecord:
    fields: dict[str, object] = {
        "type": "finding",
        "id": record_id,
        "group_id": "dormant",
        "state": "open",
        "spec": {"id": record_id, "evidence": {"days": 91, "audit": [1, 2]}, "title": "Dormant"},
        "updated_at": T0,
        "identity_id": "svc",
        "owner_id": "team-a",
    }
    fields.update(kw)
    return GovernRecord(**fields)  # type: ignore[arg-type]


# -- merging rollups --


def test_merging_adds_counts_keeps_the_widest_window_and_unions_facets() -> None:
    a = _rollup(
        first_seen=_at(2), last_seen=_at(3), count=2, facets={"source": ("b", "c"), "scope": ("x",)}
    )
    b = _rollup(first_seen=_at(1), last_seen=_at(2.5), count=5, facets={"source": ("a", "c")})
    merged = merge_rollups(a, b)
    assert merged == _rollup(
        first_seen=_at(1),
        last_seen=_at(3),
        count=7,
        facets={"scope": ("x",), "source": ("a", "b", "c")},
    )
    assert merge_rollups(b, a) == merged


def test_a_facet_keeps_at_most_the_cap_of_its_smallest_values_in_any_merge_order() -> None:
    values = [f"10.0.{i // 10}.{i % 10}" for i in range(USAGE_DISTINCT_CAP + 8)]
    low = _rollup(facets={"source": tuple(values[::2])})
    high = _rollup(facets={"source": tuple(values[1::2])})
    merged = merge_rollups(low, high)
    assert merged.facets == {"source": tuple(sorted(values)[:USAGE_DISTINCT_CAP])}
    assert merge_rollups(high, low) == merged


def test_rollups_of_different_keys_do_not_merge() -> None:
    with pytest.raises(ValueError, match="different keys"):
        merge_rollups(_rollup(), _rollup(credential="lease-1"))


# -- stored usage --


def test_merge_usage_adds_to_stored_rollups_and_inserts_new_keys(store: Store) -> None:
    with store.transaction() as tx:
        tx.merge_usage(
            [
                _rollup(first_seen=_at(1), last_seen=_at(2), facets={"source": ("10.0.0.1",)}),
                # The batch's own repeat of a key is merged before it is stored.
                _rollup(first_seen=_at(0.5), last_seen=_at(1), count=2),
                _rollup(credential="lease-1", entitlement="db-read", count=4),
            ]
        )
    with store.transaction() as tx:
        tx.merge_usage(
            [
                _rollup(
                    first_seen=_at(3),
                    last_seen=_at(4),
                    count=10,
                    facets={"source": ("10.0.0.0", "10.0.0.1"), "user_agent": ("psql",)},
                ),
                _rollup(credential="lease-1", entitlement="db-read", first_seen=_at(-1)),
            ]
        )
    with store.read() as tx:
        assert tx.usage_for(["svc"], DAY) == [
            _rollup(
                first_seen=_at(0.5),
                last_seen=_at(4),
                count=13,
                facets={"source": ("10.0.0.0", "10.0.0.1"), "user_agent": ("psql",)},
            ),
            _rollup(credential="lease-1", entitlement="db-read", first_seen=_at(-1), count=5),
        ]


def test_stored_facets_are_capped_and_sorted_by_code_point_on_every_backend(
    store: Store,
) -> None:
    # Mixed case, accents and digits: a database collation other than code point order
    # would keep and order other values than Python does.
    first = ["Zeta", "alpha", "émile", "Émile", "ß", "10", "9", "ábc", "abc", "_x"]
    more = [f"host-{i:02d}" for i in range(USAGE_DISTINCT_CAP)]
    with store.transaction() as tx:
        tx.merge_usage([_rollup(facets={"source": tuple(first), "scope": ("read",)})])
    with store.transaction() as tx:
        tx.merge_usage([_rollup(facets={"source": tuple(more), "action": ("GET",)})])
    with store.read() as tx:
        (stored,) = tx.usage_for(["svc"], DAY)
    assert stored.facets == {
        "action": ("GET",),
        "scope": ("read",),
        "source": tuple(sorted({*first, *more})[:USAGE_DISTINCT_CAP]),
    }
    assert stored.count == 2
    # Values already kept change nothing; a smaller one than those kept takes the place
    # of the largest.
    with store.transaction() as tx:
        tx.merge_usage([_rollup(facets={"source": stored.facets["source"][:3]})])
    with store.read() as tx:
        (again,) = tx.usage_for(["svc"], DAY)
    assert again.facets == stored.facets and again.count == 3
    with store.transaction() as tx:
        tx.merge_usage([_rollup(facets={"source": ("!first", "Zeta")})])
    with store.read() as tx:
        (last,) = tx.usage_for(["svc"], DAY)
    assert last.facets["source"] == ("!first", *stored.facets["source"][:-1])


def test_usage_for_picks_identities_and_days_in_key_order(store: Store) -> None:
    yesterday, today = DAY - dt.timedelta(days=1), DAY
    with store.transaction() as tx:
        tx.merge_usage(
            [
                _rollup("b", today, credential="z"),
                _rollup("b", today, credential="a", entitlement="p2"),
                _rollup("b", today, credential="a", entitlement="p1"),
                _rollup("a", today),
                _rollup("a", yesterday),
                _rollup("a", DAY - dt.timedelta(days=30)),
                _rollup("c", today),
            ]
        )
    with store.read() as tx:
        found = tx.usage_for(["b", "a", "missing", "a"], yesterday)
        assert [(r.identity_id, r.day, r.credential, r.entitlement) for r in found] == [
            ("a", yesterday, "", ""),
            ("a", today, "", ""),
            ("b", today, "a", "p1"),
            ("b", today, "a", "p2"),
            ("b", today, "z", ""),
        ]
        assert tx.usage_for(["c"], today + dt.timedelta(days=1)) == []
        assert tx.usage_for([], yesterday) == []


def test_usage_for_many_identities_at_once(store: Store) -> None:
    ids = [f"id-{i:05d}" for i in range(4500)]
    with store.transaction() as tx:
        tx.merge_usage([_rollup(i, count=n + 1) for n, i in enumerate(ids)])
    with store.read() as tx:
        found = tx.usage_for(list(reversed(ids)), DAY)
    assert [(r.identity_id, r.count) for r in found] == [(i, n + 1) for n, i in enumerate(ids)]


def test_prune_usage_forgets_days_before(store: Store) -> None:
    days = [DAY - dt.timedelta(days=n) for n in range(5)]
    with store.transaction() as tx:
        tx.merge_usage([_rollup("svc", d) for d in days] + [_rollup("other", days[4])])
    with store.transaction() as tx:
        assert tx.prune_usage(days[2]) == 3
    with store.transaction() as tx:
        assert tx.prune_usage(days[2]) == 0
    with store.read() as tx:
        assert [r.day for r in tx.usage_for(["svc", "other"], days[4])] == [
            days[2],
            days[1],
            days[0],
        ]


def test_a_failed_transaction_merges_nothing(store: Store) -> None:
    with store.transaction() as tx:
        tx.merge_usage([_rollup(count=1)])
    with pytest.raises(RuntimeError), store.transaction() as tx:
        tx.merge_usage([_rollup(count=5), _rollup("new")])
        raise RuntimeError("boom")
    with store.read() as tx:
        assert [(r.identity_id, r.count) for r in tx.usage_for(["svc", "new"], DAY)] == [("svc", 1)]


def test_concurrent_merges_lose_no_count_and_no_facet(store: Store) -> None:
    # Two writers merge the same keys (new ones and existing ones) at the same time: on
    # PostgreSQL their transactions overlap, and each key ends with both writers' counts.
    rounds, keys = 15, 6
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(name: str) -> None:
        try:
            start.wait()
            for n in range(rounds):
                batch = [
                    _rollup(
                        f"id-{k}",
                        DAY - dt.timedelta(days=n % 3),
                        first_seen=_at(n),
                        last_seen=_at(n),
                        facets={"source": (name,), "round": (f"{n:02d}",)},
                    )
                    for k in range(keys)
                ]
                with store.transaction() as tx:
                    tx.merge_usage(batch)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with store.read() as tx:
        found = tx.usage_for([f"id-{k}" for k in range(keys)], DAY - dt.timedelta(days=2))
    assert len(found) == keys * 3
    assert sum(r.count for r in found) == 2 * rounds * keys
    for r in found:
        assert r.count == 2 * rounds // 3
        assert r.facets["source"] == ("w1", "w2")
        assert len(r.facets["round"]) == rounds // 3


# -- governance records --


def test_govern_records_round_trip_and_are_replaced_by_type_and_id(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_govern(
            [
                _record("f1"),
                _record("c1", type="campaign", group_id="", state="running", identity_id=None),
                _record("f2", identity_id=None, owner_id=None),
            ]
        )
    with store.read() as tx:
        assert tx.get_govern("finding", "f1") == _record("f1")
        assert tx.get_govern("finding", "f2") == _record("f2", identity_id=None, owner_id=None)
        assert tx.get_govern("campaign", "f1") is None
        assert tx.get_govern("finding", "c1") is None
    later = dt.datetime(2026, 6, 2, 14, 0, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    with store.transaction() as tx:
        tx.put_govern([_record("f1", state="resolved", spec={"id": "f1"}, updated_at=later)])
    with store.read() as tx:
        stored = tx.get_govern("finding", "f1")
        assert stored == _record("f1", state="resolved", spec={"id": "f1"}, updated_at=later)
        assert stored is not None and stored.updated_at.utcoffset() == dt.timedelta(0)
        assert tx.get_govern("campaign", "c1") is not None


def test_a_stored_spec_does_not_change_with_the_callers_dict(store: Store) -> None:
    spec: dict[str, object] = {"id": "f1", "evidence": {"n": 1}}
    with store.transaction() as tx:
        tx.put_govern([_record("f1", spec=spec)])
    spec["evidence"] = {"n": 2}
    with store.read() as tx:
        stored = tx.get_govern("finding", "f1")
        assert stored is not None and stored.spec == {"id": "f1", "evidence": {"n": 1}}


def test_list_govern_narrows_by_every_filter(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_govern(
            [
                _record("f1"),
                _record("f2", group_id="orphaned", identity_id="api", owner_id="team-b"),
                _record("f3", state="resolved", identity_id="api"),
                _record("f4", state="excepted", identity_id=None, owner_id=None),
                _record("e1", type="exception", group_id="dormant", identity_id="svc"),
            ]
        )

    def ids(**where: object) -> list[str]:
        with store.read() as tx:
            return [r.id for r in tx.list_govern(GovernFilter(**where))]  # type: ignore[arg-type]

    assert ids(type="finding") == ["f1", "f2", "f3", "f4"]
    assert ids(type="exception") == ["e1"]
    assert ids(type="alert") == []
    assert ids(type="finding", group_id="dormant") == ["f1", "f3", "f4"]
    assert ids(type="finding", identity_id="api") == ["f2", "f3"]
    assert ids(type="finding", identity_ids=("svc", "gone")) == ["f1"]
    assert ids(type="finding", identity_ids=()) == []
    assert ids(type="finding", owner_id="team-b") == ["f2"]
    assert ids(type="finding", owner_in=("team-a", "team-c")) == ["f1", "f3"]
    assert ids(type="finding", owner_in=()) == []
    assert ids(type="finding", states=("open", "excepted")) == ["f1", "f2", "f4"]
    assert ids(type="finding", group_id="dormant", states=("open",), identity_id="svc") == ["f1"]
    assert ids(type="finding", after_id="f1", limit=2) == ["f2", "f3"]
    assert ids(type="finding", after_id="f4") == []


def test_list_govern_pages_over_many_identities(store: Store) -> None:
    records = [_record(f"f-{i:05d}", identity_id=f"id-{i:05d}") for i in range(4500)]
    with store.transaction() as tx:
        tx.put_govern(records)
    wanted = tuple(f"id-{i:05d}" for i in range(4500) if i % 2 == 0)
    pages: list[str] = []
    after = None
    with store.read() as tx:
        while True:
            page = tx.list_govern(
                GovernFilter("finding", identity_ids=wanted, after_id=after, limit=1000)
            )
            if not page:
                break
            pages.extend(r.id for r in page)
            after = page[-1].id
    assert pages == [f"f-{i:05d}" for i in range(4500) if i % 2 == 0]


def test_delete_govern_removes_only_those_ids_of_that_type(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_govern([_record("a"), _record("b"), _record("a", type="alert", group_id="hook")])
    with store.transaction() as tx:
        tx.delete_govern("finding", ["a", "missing"])
        tx.delete_govern("finding", [])
    with store.read() as tx:
        assert [r.id for r in tx.list_govern(GovernFilter("finding"))] == ["b"]
        assert tx.get_govern("alert", "a") is not None


def test_govern_counts_by_group_and_state(store: Store) -> None:
    with store.transaction() as tx:
        tx.put_govern(
            [
                _record("f1"),
                _record("f2"),
                _record("f3", state="resolved"),
                _record("f4", group_id="orphaned"),
                _record("x1", type="exception"),
            ]
        )
    with store.read() as tx:
        assert tx.govern_counts("finding") == {
            ("dormant", "open"): 2,
            ("dormant", "resolved"): 1,
            ("orphaned", "open"): 1,
        }
        assert tx.govern_counts("alert") == {}


def test_a_read_only_transaction_refuses_governance_writes() -> None:
    store = open_store("memory://")
    with store.read() as tx, pytest.raises(StoreError):
        tx.put_govern([_record("f1")])
    with store.read() as tx, pytest.raises(StoreError):
        tx.merge_usage([_rollup()])


# -- the sweep's prefilter: departed owners --


def test_an_identity_of_a_departed_owner_is_a_candidate_while_it_holds_leases(
    store: Store,
) -> None:
    with store.transaction() as tx:
        for owner in ("team-a", "team-b"):
            tx.put_estate_object("owner", owner, {"id": owner, "contact": f"{owner}@x.test"})
        tx.put_identity(_identity("a-live"))
        tx.put_identity(_identity("b-live", owner="team-b"))
        tx.put_identity(_identity("b-idle", owner="team-b"))
        tx.insert_leases([_lease("l-a", identity_id="a-live"), _lease("l-b", identity_id="b-live")])
    with store.read() as tx:
        assert tx.unjustified_identities(T0, [], 10) == []
        found = tx.unjustified_identities(T0, [], 10, ended_owner_ids=["team-b"])
        assert [s["id"] for s in found] == ["b-live"]
        assert tx.unjustified_identities(T0, [], 10, "b-live", ["team-b"]) == []


# -- the schema the migration builds --


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.service)])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tether.db'}"
    else:
        with throwaway_postgres_database() as url:
            yield url


def test_the_migration_builds_the_governance_tables_as_declared(sql_url: str) -> None:
    store = open_store(sql_url)
    store.migrate()
    store.close()
    engine = sa.create_engine(_engine_url(sql_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            ours = {"usage_rollups", "govern_records"}
            # Differences of the governance tables only (the others have tests of their own).
            diffs = [
                d for d in compare_metadata(context, t.metadata) if any(n in repr(d) for n in ours)
            ]
            assert diffs == []
            assert ours <= set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()
