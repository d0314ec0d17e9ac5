"""The SQL of tether.keys: per-version usage counters, and removing sealed material.

A reservation is one upsert that adds to the counter in the database and returns the
new total (ON CONFLICT DO UPDATE ... RETURNING on SQLite and PostgreSQL alike): on
PostgreSQL the row is locked by the update and read at its newest version, so two nodes
reserving at once get disjoint blocks, and nothing is read into Python first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tether.store._port import KeyUsageCount
from tether.store._sql import tables as t
from tether.store.errors import StoreError

_CHUNK = 2000  # ids per IN (...) list: well under every backend's parameter limit


def _insert(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


class KeysSql:
    """The key-usage methods of `_SqlTx` (mixed in)."""

    if TYPE_CHECKING:

        @property
        def _c(self) -> Connection: ...

    def reserve_key_usage(self, key: str, version: int, n: int) -> int:
        if n < 1:
            raise StoreError("a reservation is of one encryption or more")
        c = t.key_usage.c
        stmt = _insert(self._c.dialect.name)(t.key_usage).values(
            key_name=key, version=version, encryptions=n, decryptions=0
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["key_name", "version"],
            set_={"encryptions": c.encryptions + stmt.excluded.encryptions},
        ).returning(c.encryptions)
        return int(self._c.execute(stmt).scalar_one())

    def add_key_decryptions(self, counts: Sequence[tuple[str, int, int]], at: dt.datetime) -> None:
        if not counts:
            return
        merged: dict[tuple[str, int], int] = {}
        for key, version, n in counts:
            merged[(key, version)] = merged.get((key, version), 0) + n
        c = t.key_usage.c
        stmt = _insert(self._c.dialect.name)(t.key_usage)
        latest = sa.case(
            (c.last_decrypted_at.is_(None), stmt.excluded.last_decrypted_at),
            (
                c.last_decrypted_at < stmt.excluded.last_decrypted_at,
                stmt.excluded.last_decrypted_at,
            ),
            else_=c.last_decrypted_at,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["key_name", "version"],
            set_={
                "decryptions": c.decryptions + stmt.excluded.decryptions,
                "last_decrypted_at": latest,
            },
        )
        # In key order: concurrent flushes lock rows in one order (no deadlock).
        rows = [
            {
                "key_name": key,
                "version": version,
                "encryptions": 0,
                "decryptions": n,
                "last_decrypted_at": at,
            }
            for (key, version), n in sorted(merged.items())
        ]
        for row in rows:
            self._c.execute(stmt, row)

    def key_usage(self, key: str) -> list[KeyUsageCount]:
        c = t.key_usage.c
        rows = self._c.execute(sa.select(t.key_usage).where(c.key_name == key).order_by(c.version))
        return [
            KeyUsageCount(
                r.key_name,
                int(r.version),
                int(r.encryptions),
                int(r.decryptions),
                r.last_decrypted_at,
            )
            for r in rows
        ]

    def delete_key_usage(self, key: str, versions: Sequence[int] | None = None) -> int:
        c = t.key_usage.c
        query = sa.delete(t.key_usage).where(c.key_name == key)
        if versions is not None:
            if not versions:
                return 0
            query = query.where(c.version.in_(list(versions)))
        return int(self._c.execute(query).rowcount or 0)

    def delete_sealed(self, record_ids: Sequence[str]) -> int:
        c = t.sealed_records.c
        gone = 0
        ids = list(dict.fromkeys(record_ids))
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            gone += int(
                self._c.execute(sa.delete(t.sealed_records).where(c.id.in_(chunk))).rowcount or 0
            )
        return gone
