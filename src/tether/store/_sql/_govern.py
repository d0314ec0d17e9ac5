"""The SQL of tether.govern: usage rollups and governance records.

Usage arrives in bulk (a flush of the day's rollups, a million on a bench load): a merge
is one upsert per chunk that adds counts and widens the seen window in the database, so
concurrent writers on PostgreSQL lose nothing (ON CONFLICT DO UPDATE locks the row and
reads its newest version) and no row is read into Python first. The facets' union runs
in the database as well: in SQL on PostgreSQL, in a Python function SQLite calls back.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tether._internal.canonical import canonical_json
from tether.store._port import (
    USAGE_DISTINCT_CAP,
    GovernFilter,
    GovernRecord,
    UsageRollup,
    coalesce_rollups,
    merge_facets,
)
from tether.store._sql import tables as t

_CHUNK = 2000  # ids per IN (...) list: well under every backend's parameter limit
#: Rollups per upsert on PostgreSQL (arrays, one statement) and SQLite (executemany).
_MERGE_CHUNK = 10_000
_EMPTY = "{}"

_USAGE_COLUMNS = (
    "identity_id",
    "day",
    "credential",
    "entitlement",
    "count",
    "first_seen",
    "last_seen",
    "facets",
)
_KEY = "identity_id, day, credential, entitlement"
_NAMES = ", ".join(_USAGE_COLUMNS)

# The union of two facet maps, each facet's values distinct, in code point order (the
# "C" collation: Python's `sorted`), capped: what `merge_facets` computes.
_PG_FACETS = f"""(
  SELECT COALESCE(jsonb_object_agg(k.f, (
      SELECT jsonb_agg(v ORDER BY v COLLATE "C") FROM (
        SELECT x.v FROM jsonb_array_elements_text(
          COALESCE(p.a -> k.f, '[]'::jsonb) || COALESCE(p.b -> k.f, '[]'::jsonb)) AS x(v)
        GROUP BY x.v ORDER BY x.v COLLATE "C" LIMIT {int(USAGE_DISTINCT_CAP)}) AS s)),
    '{{}}'::jsonb)::text
  FROM (SELECT u.facets::jsonb AS a, excluded.facets::jsonb AS b) AS p,
    LATERAL (SELECT jsonb_object_keys(p.a) UNION SELECT jsonb_object_keys(p.b)) AS k(f)
)"""  # noqa: S608 - a constant integer, no value from outside

_MERGE_SET = """count = u.count + excluded.count,
  first_seen = {least}(u.first_seen, excluded.first_seen),
  last_seen = {greatest}(u.last_seen, excluded.last_seen),
  facets = CASE WHEN excluded.facets = '{{}}' THEN u.facets
                WHEN u.facets = '{{}}' THEN excluded.facets
                {contained}
                ELSE {facets} END"""

# Column names and placeholders only: every value is bound.
_MERGE_SQLITE = (
    f"INSERT INTO usage_rollups AS u ({_NAMES}) VALUES ({', '.join('?' * len(_USAGE_COLUMNS))}) "  # noqa: S608
    f"ON CONFLICT ({_KEY}) DO UPDATE SET "
    + _MERGE_SET.format(
        least="min",
        greatest="max",
        contained="",
        facets="tether_merge_facets(u.facets, excluded.facets)",
    )
)
_MERGE_PG = (
    f"INSERT INTO usage_rollups AS u ({_NAMES}) "  # noqa: S608
    "SELECT * FROM unnest(%s::text[], %s::date[], %s::text[], %s::text[], %s::bigint[], "
    "%s::timestamptz[], %s::timestamptz[], %s::text[]) "
    f"ON CONFLICT ({_KEY}) DO UPDATE SET "
    + _MERGE_SET.format(
        least="LEAST",
        greatest="GREATEST",
        # Nothing new (the usual flush: the same sources again) costs no union: jsonb's
        # containment is per key, per array element.
        contained="WHEN u.facets::jsonb @> excluded.facets::jsonb THEN u.facets",
        facets=_PG_FACETS,
    )
)
# SQLite's times come back as naive UTC text: with "+00:00" appended (by SQLite, which
# is cheaper than a datetime's `replace` in Python) they parse to aware UTC times.
# BINARY collation is code point order, Python's: the rows need no sorting after.
_USAGE_SQLITE = (
    "SELECT identity_id, day, credential, entitlement, count, first_seen || '+00:00', "  # noqa: S608
    "last_seen || '+00:00', facets FROM usage_rollups "
    f"WHERE identity_id IN ({{marks}}) AND day >= ? ORDER BY {_KEY}"
)
# PostgreSQL's collation may not be code point order: "C" is.
_USAGE_PG = (
    f"SELECT {_NAMES} FROM usage_rollups WHERE identity_id = ANY(%s) AND day >= %s "  # noqa: S608
    'ORDER BY identity_id COLLATE "C", day, credential COLLATE "C", entitlement COLLATE "C"'
)

_GOVERN_COLUMNS = (
    "type",
    "id",
    "group_id",
    "identity_id",
    "owner_id",
    "state",
    "spec",
    "updated_at",
)
_GOVERN_UPSERT = (
    f"INSERT INTO govern_records ({', '.join(_GOVERN_COLUMNS)}) "  # noqa: S608
    f"VALUES ({', '.join('?' * len(_GOVERN_COLUMNS))}) ON CONFLICT (type, id) DO UPDATE SET "
    + ", ".join(f"{n} = excluded.{n}" for n in _GOVERN_COLUMNS[2:])
)


@functools.lru_cache(maxsize=8192)
def _sqlite_merge_facets(old: str, new: str) -> str:
    # Called by SQLite for a rollup whose key is already stored; the same pairs recur
    # (yesterday's sources merged with today's), so each is computed once.
    return _facets_text(merge_facets(json.loads(old), json.loads(new)))


def _facets_text(facets: Mapping[str, tuple[str, ...]]) -> str:
    if not facets:
        return _EMPTY
    try:
        return _items_text(tuple(facets.items()))
    except TypeError:  # unhashable values: not cached
        return canonical_json({k: list(v) for k, v in facets.items()})


@functools.lru_cache(maxsize=8192)
def _items_text(items: tuple[tuple[str, tuple[str, ...]], ...]) -> str:
    return canonical_json({k: list(v) for k, v in items})


def _sqlite_time(value: dt.datetime) -> str:
    # `_fast._sqlite_time_in` without the conversion when the time is UTC already (the
    # usual case, and a third of a bulk merge's cost).
    if value.tzinfo is not dt.UTC:
        value = value.astimezone(dt.UTC)
    # Less its "+00:00": cheaper than a naive copy of the datetime.
    return value.isoformat(" ", "microseconds")[:-6]


@functools.lru_cache(maxsize=4096)
def _day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


@functools.lru_cache(maxsize=8192)
def _facets_of(text: str) -> dict[str, tuple[str, ...]]:
    # Rollups repeat a few facet sets (the same sources, day after day): parse each once
    # (callers get a copy of the dict; its values are tuples).
    return {k: tuple(v) for k, v in sorted(json.loads(text).items())}


def _sqlite_rollup(row: Sequence[Any]) -> UsageRollup:
    identity_id, day, credential, entitlement, count, first, last, facets = row
    return UsageRollup(
        identity_id,
        _day(day),
        dt.datetime.fromisoformat(first),
        dt.datetime.fromisoformat(last),
        credential,
        entitlement,
        count,
        {} if facets == _EMPTY else dict(_facets_of(facets)),
    )


def _pg_rollup(row: Sequence[Any]) -> UsageRollup:
    identity_id, day, credential, entitlement, count, first, last, facets = row
    return UsageRollup(
        identity_id,
        day,
        first.astimezone(dt.UTC),
        last.astimezone(dt.UTC),
        credential,
        entitlement,
        int(count),
        {} if facets == _EMPTY else dict(_facets_of(facets)),
    )


def _record(row: Any) -> GovernRecord:
    return GovernRecord(
        type=row.type,
        id=row.id,
        group_id=row.group_id,
        state=row.state,
        spec=json.loads(row.spec),
        updated_at=row.updated_at,
        identity_id=row.identity_id,
        owner_id=row.owner_id,
    )


def _sqlite_record(row: Sequence[Any]) -> GovernRecord:
    type_, record_id, group_id, identity_id, owner_id, state, spec, updated_at = row
    return GovernRecord(
        type=type_,
        id=record_id,
        group_id=group_id,
        state=state,
        spec=json.loads(spec),
        updated_at=dt.datetime.fromisoformat(updated_at).replace(tzinfo=dt.UTC),
        identity_id=identity_id,
        owner_id=owner_id,
    )


class GovernSql:
    """The governance methods of `_SqlTx` (mixed in)."""

    if TYPE_CHECKING:

        @property
        def _c(self) -> Connection: ...

        def _driver(self, sql: str, params: Any, many: bool = False) -> Any: ...

    @property
    def _sqlite(self) -> bool:
        return self._c.dialect.name == "sqlite"

    # -- usage --
    def merge_usage(self, rollups: Sequence[UsageRollup]) -> None:
        # One row per key, in key order: concurrent writers then lock rows in one order
        # (no deadlock), and no statement touches a row twice.
        merged = coalesce_rollups(rollups)
        if not merged:
            return
        if self._sqlite:
            self._c.connection.driver_connection.create_function(  # type: ignore[union-attr]
                "tether_merge_facets", 2, _sqlite_merge_facets, deterministic=True
            )
            for start in range(0, len(merged), _MERGE_CHUNK):
                rows = [
                    (
                        r.identity_id,
                        r.day.isoformat(),
                        r.credential,
                        r.entitlement,
                        r.count,
                        _sqlite_time(r.first_seen),
                        _sqlite_time(r.last_seen),
                        _facets_text(r.facets),
                    )
                    for r in merged[start : start + _MERGE_CHUNK]
                ]
                self._driver(_MERGE_SQLITE, rows, many=True)
            return
        for start in range(0, len(merged), _MERGE_CHUNK):
            chunk = merged[start : start + _MERGE_CHUNK]
            self._driver(
                _MERGE_PG,
                (
                    [r.identity_id for r in chunk],
                    [r.day for r in chunk],
                    [r.credential for r in chunk],
                    [r.entitlement for r in chunk],
                    [r.count for r in chunk],
                    [r.first_seen for r in chunk],
                    [r.last_seen for r in chunk],
                    [_facets_text(r.facets) for r in chunk],
                ),
            )

    def usage_for(self, identity_ids: Sequence[str], since: dt.date) -> list[UsageRollup]:
        ids = sorted(set(identity_ids))
        out: list[UsageRollup] = []
        sqlite = self._sqlite
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            if sqlite:
                sql = _USAGE_SQLITE.format(marks=", ".join("?" * len(chunk)))
                rows = self._driver(sql, (*chunk, since.isoformat())).fetchall()
                out.extend(map(_sqlite_rollup, rows))
            else:
                rows = self._driver(_USAGE_PG, (chunk, since)).fetchall()
                out.extend(map(_pg_rollup, rows))
        return out

    def prune_usage(self, before: dt.date) -> int:
        result = self._c.execute(sa.delete(t.usage_rollups).where(t.usage_rollups.c.day < before))
        return int(result.rowcount or 0)

    # -- governance records --
    def put_govern(self, records: Sequence[GovernRecord]) -> None:
        if not records:
            return
        sqlite = self._sqlite
        sql = _GOVERN_UPSERT if sqlite else _GOVERN_UPSERT.replace("?", "%s")
        rows = [
            (
                r.type,
                r.id,
                r.group_id,
                r.identity_id,
                r.owner_id,
                r.state,
                canonical_json(dict(r.spec)),
                _sqlite_time(r.updated_at) if sqlite else r.updated_at.astimezone(dt.UTC),
            )
            for r in records
        ]
        self._driver(sql, rows, many=True)

    def get_govern(self, type_: str, record_id: str) -> GovernRecord | None:
        g = t.govern_records.c
        row = self._c.execute(
            sa.select(t.govern_records).where(g.type == type_, g.id == record_id)
        ).first()
        return None if row is None else _record(row)

    def list_govern(self, where: GovernFilter) -> list[GovernRecord]:
        g = t.govern_records.c
        query = sa.select(t.govern_records).where(g.type == where.type)
        for column, value in (
            (g.group_id, where.group_id),
            (g.identity_id, where.identity_id),
            (g.owner_id, where.owner_id),
        ):
            if value is not None:
                query = query.where(column == value)
        for column, values in ((g.owner_id, where.owner_in), (g.state, where.states)):
            if values is not None:
                query = query.where(column.in_(list(values)))
        if where.after_id is not None:
            query = query.where(g.id > where.after_id)
        order: Any = g.id
        if where.identity_ids is not None or where.identity_id is not None:
            # Not an index term (`id || ''`): ordered by the primary key, SQLite would walk
            # every record of the type instead of the identity index.
            order = g.id.concat("")
        query = query.order_by(order).limit(where.limit)
        if where.identity_ids is None:
            return [_record(r) for r in self._c.execute(query)]
        # Many identities: a query per chunk, each at most `limit`, merged in id order.
        ids = sorted(set(where.identity_ids))
        if self._sqlite:
            return self._records_of_identities(where, ids)
        found: list[GovernRecord] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            found.extend(_record(r) for r in self._c.execute(query.where(g.identity_id.in_(chunk))))
        if len(ids) > _CHUNK:
            found.sort(key=lambda r: r.id)
        return found[: where.limit]

    def _records_of_identities(self, where: GovernFilter, ids: list[str]) -> list[GovernRecord]:
        """`list_govern` by identities on SQLite, on the driver's cursor: a full
        evaluation reads every identity's records a page at a time, and the ORM's row
        processing was a third of that."""
        clauses = ["type = ?"]
        params: list[Any] = [where.type]
        for column, value in (("group_id", where.group_id), ("owner_id", where.owner_id)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        for column, values in (("owner_id", where.owner_in), ("state", where.states)):
            if values is not None:
                clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
                params.extend(values)
        if where.after_id is not None:
            clauses.append("id > ?")
            params.append(where.after_id)
        found: list[GovernRecord] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            sql = (
                "SELECT type, id, group_id, identity_id, owner_id, state, spec, updated_at "  # noqa: S608
                f"FROM govern_records WHERE {' AND '.join(clauses)} "
                f"AND identity_id IN ({', '.join('?' * len(chunk))}) "
                "ORDER BY id || '' LIMIT ?"
            )
            rows = self._driver(sql, (*params, *chunk, where.limit)).fetchall()
            found.extend(map(_sqlite_record, rows))
        if len(ids) > _CHUNK:
            found.sort(key=lambda r: r.id)
        return found[: where.limit]

    def delete_govern(self, type_: str, record_ids: Sequence[str]) -> None:
        g = t.govern_records.c
        ids = list(record_ids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            self._c.execute(sa.delete(t.govern_records).where(g.type == type_, g.id.in_(chunk)))

    def govern_counts(self, type_: str) -> dict[tuple[str, str], int]:
        g = t.govern_records.c
        rows = self._c.execute(
            sa.select(g.group_id, g.state, sa.func.count())
            .where(g.type == type_)
            .group_by(g.group_id, g.state)
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}
