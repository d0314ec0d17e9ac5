"""The statements every issuance and introspection runs, executed on the driver's own
cursor inside the SQLAlchemy transaction.

SQLAlchemy Core costs 50-100 µs per statement before the database sees it (execution
context, parameter processing, result wrapping): more than SQLite takes to run these
statements, and as much as the rest of an exchange. These few are written once per
dialect from the table definitions (`tables`), so they cannot drift from the schema, and
bind and read values exactly as the `UTCDateTime` type does.
"""

from __future__ import annotations

import datetime as dt
from collections import namedtuple
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from tether.store._sql import tables as t

_Convert = Callable[[Any], Any]


def _sqlite_time_in(value: dt.datetime | None) -> str | None:
    # SQLAlchemy's SQLite DATETIME text, naive UTC: stored values compare as text.
    if value is None:
        return None
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_time_out(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)


def _pg_time_in(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.UTC)


def _pg_time_out(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else value.astimezone(dt.UTC)


class _Table:
    """One table's row shape: column order, and which columns hold times."""

    def __init__(self, table: sa.Table, time_in: _Convert, time_out: _Convert) -> None:
        self.names = [c.name for c in table.c]
        self._times = [i for i, c in enumerate(table.c) if isinstance(c.type, t.UTCDateTime)]
        self._time_in, self._time_out = time_in, time_out
        self.row: Any = namedtuple(f"{table.name}_row", self.names)  # type: ignore[misc]

    def params(self, values: dict[str, Any]) -> list[Any]:
        row = [values[n] for n in self.names]
        for i in self._times:
            if row[i] is not None:
                row[i] = self._time_in(row[i])
        return row

    def read(self, raw: Sequence[Any]) -> Any:
        row = list(raw)
        for i in self._times:
            if row[i] is not None:
                row[i] = self._time_out(row[i])
        return self.row._make(row)


class FastStatements:
    """The hot statements of one dialect (`sqlite` or `postgresql`)."""

    def __init__(self, dialect: str) -> None:
        sqlite = dialect == "sqlite"
        time_in, time_out = (
            (_sqlite_time_in, _sqlite_time_out) if sqlite else (_pg_time_in, _pg_time_out)
        )
        self._mark = "?" if sqlite else "%s"
        self.leases = _Table(t.leases, time_in, time_out)
        self.tasks = _Table(t.tasks, time_in, time_out)
        self.audit = _Table(t.audit_log, time_in, time_out)
        self.insert_lease = self._insert(t.leases, self.leases)
        self.insert_audit = self._insert(t.audit_log, self.audit)
        updates = ", ".join(f"{n} = excluded.{n}" for n in self.tasks.names if n != "id")
        self._upsert_task = f" ON CONFLICT (id) DO UPDATE SET {updates}"
        self.put_task = self._insert(t.tasks, self.tasks) + self._upsert_task
        self.update_audit_head = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = 1".replace(
            "?", self._mark
        )
        # Locks the head row on PostgreSQL (appenders queue there); SQLite's writer is
        # alone already (BEGIN IMMEDIATE).
        head = "SELECT seq, hash FROM audit_head WHERE id = 1"
        self.audit_head = head if sqlite else f"{head} FOR UPDATE"
        self._many: dict[tuple[str, int], str] = {}
        self.lease_by_id = self._select(t.leases, self.leases, "id")
        self.lease_by_token_hash = self._select(t.leases, self.leases, "token_hash")
        self.task_by_id = self._select(t.tasks, self.tasks, "id")
        self.time_in = time_in
        names = ", ".join(self.leases.names)
        self.leases_due = (
            f"SELECT {names} FROM leases WHERE state = 'active' AND expires_at <= ? "  # noqa: S608
            "ORDER BY expires_at LIMIT ?"
        ).replace("?", self._mark)
        self._end_leases: dict[tuple[int, int, bool], str] = {}
        self._children: dict[tuple[int, int], str] = {}

    def children(self, parents: int, states: int) -> str:
        """The leases derived from `parents` parent ids, in `states` states, by id: the
        step of a revocation cascade (thousands of parents per statement). Parameters:
        (*parent_ids, *states, limit)."""
        key = (parents, states)
        sql = self._children.get(key)
        if sql is None:
            # Column names and placeholders only. `state || ''`: by the parent index,
            # not a state index over every live lease (see end_leases).
            sql = (
                f"SELECT {', '.join(self.leases.names)} FROM leases "  # noqa: S608
                f"WHERE parent_id IN ({', '.join('?' * parents)}) "
                f"AND (state || '') IN ({', '.join('?' * states)}) ORDER BY id LIMIT ?"
            ).replace("?", self._mark)
            self._children[key] = sql
        return sql

    def end_leases(self, ids: int, sources: int, *, revoking: bool) -> str:
        """UPDATE ... RETURNING for `ids` lease ids in `sources` states; its parameters are
        (state, reason, at, *ids, *sources). A revoking lease keeps no `ended_at` yet: `at`
        is when its external revocation is next tried."""
        key = (ids, sources, revoking)
        sql = self._end_leases.get(key)
        if sql is None:
            when = "next_attempt_at" if revoking else "ended_at"
            # Column names and placeholders only: every value is bound. `state || ''` is
            # not an index term: SQLite without statistics would walk a state index over
            # every live lease (a million) for each batch, not look up the ids.
            sql = (
                f"UPDATE leases SET state = ?, end_reason = COALESCE(end_reason, ?), {when} = ? "  # noqa: S608
                f"WHERE id IN ({', '.join('?' * ids)}) "
                f"AND (state || '') IN ({', '.join('?' * sources)}) "
                f"RETURNING {', '.join(self.leases.names)}"
            ).replace("?", self._mark)
            self._end_leases[key] = sql
        return sql

    #: Rows per multi-row INSERT: within SQLite's oldest limit of 999 bound parameters.
    MAX_PARAMS = 999

    def rows_per_insert(self, table: str) -> int:
        return self.MAX_PARAMS // len(self._shape(table).names)

    def insert_many(self, table: str, rows: int) -> str:
        """One INSERT of `rows` rows into `table` (`leases`, `audit_log`, or `tasks` as an
        upsert): one statement, one round trip and one release of the GIL however many
        issuances a group commit holds (an `executemany` steps, and releases, per row)."""
        key = (table, rows)
        sql = self._many.get(key)
        if sql is None:
            shape = self._shape(table)
            one = f"({', '.join(self._mark for _ in shape.names)})"
            # Names from the schema, values bound: nothing here comes from a request.
            sql = (
                f"INSERT INTO {table} ({', '.join(shape.names)}) "  # noqa: S608
                f"VALUES {', '.join([one] * rows)}"
            )
            if table == "tasks":
                sql += self._upsert_task
            self._many[key] = sql
        return sql

    def _shape(self, table: str) -> _Table:
        return {"leases": self.leases, "tasks": self.tasks, "audit_log": self.audit}[table]

    def _insert(self, table: sa.Table, shape: _Table) -> str:
        marks = ", ".join(self._mark for _ in shape.names)
        # Names from the schema, values bound: nothing here comes from a request.
        return f"INSERT INTO {table.name} ({', '.join(shape.names)}) VALUES ({marks})"  # noqa: S608

    def _select(self, table: sa.Table, shape: _Table, key: str) -> str:
        names = ", ".join(shape.names)
        return f"SELECT {names} FROM {table.name} WHERE {key} = {self._mark}"  # noqa: S608


_BY_DIALECT: dict[str, FastStatements] = {}


def statements(dialect: str) -> FastStatements:
    found = _BY_DIALECT.get(dialect)
    if found is None:
        found = _BY_DIALECT[dialect] = FastStatements(dialect)
    return found
