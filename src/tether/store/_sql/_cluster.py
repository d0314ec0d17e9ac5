"""The SQL of tether.cluster: the change feed, the leadership lease and claimed retries.

Times that decide who leads are the database's clock, not a node's: nodes whose clocks
disagree still agree on when a lease has expired.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from tether._internal.timeutil import utcnow
from tether.model import Lease
from tether.store._port import ClusterEvent
from tether.store._sql import tables as t

log = logging.getLogger("tether.store")

#: The channel PostgreSQL notifies on each commit that published an event.
CHANNEL = "tether_events"

_e, _h, _l = t.cluster_events.c, t.cluster_event_head.c, t.leadership.c
_NEXT_SEQ = (
    sa.update(t.cluster_event_head).where(_h.id == 1).values(seq=_h.seq + 1).returning(_h.seq)
)
_INSERT_EVENT = t.cluster_events.insert()
_HEAD = sa.select(_h.seq).where(_h.id == 1)
_AFTER = (
    sa.select(_e.seq, _e.kind, _e.data, _e.created_at)
    .where(_e.seq > sa.bindparam("after"))
    .order_by(_e.seq)
    .limit(sa.bindparam("limit"))
)


def _db_now(conn: Connection) -> Any:
    """Now, in seconds since the epoch, by the database's clock."""
    if conn.dialect.name == "postgresql":
        return sa.func.extract("epoch", sa.func.clock_timestamp())
    return (sa.func.julianday("now") - 2440587.5) * 86400.0


def _insert(conn: Connection) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert
    from sqlalchemy.dialects import sqlite

    return sqlite.insert


def publish(conn: Connection, kind: str, data: Mapping[str, Any]) -> None:
    seq = conn.execute(_NEXT_SEQ).scalar_one()
    conn.execute(
        _INSERT_EVENT,
        {"seq": seq, "kind": kind, "data": json.dumps(dict(data)), "created_at": utcnow()},
    )
    if conn.dialect.name == "postgresql":
        # Delivered by PostgreSQL at commit, never for a rollback; one per transaction.
        conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


def events_head(conn: Connection) -> int:
    return int(conn.execute(_HEAD).scalar_one())


def events_after(conn: Connection, seq: int, limit: int) -> list[ClusterEvent]:
    rows = conn.execute(_AFTER, {"after": seq, "limit": limit})
    return [ClusterEvent(r.seq, r.kind, json.loads(r.data), r.created_at) for r in rows]


def prune_events(conn: Connection, before: dt.datetime) -> int:
    result = conn.execute(sa.delete(t.cluster_events).where(_e.created_at < before))
    return int(result.rowcount or 0)


def claim_leadership(conn: Connection, name: str, holder: str, ttl: float) -> int | None:
    conn.execute(
        _insert(conn)(t.leadership)
        .values(name=name, holder="", term=0, expires_at=0.0)
        .on_conflict_do_nothing()
    )
    now = _db_now(conn)
    # Every SET reads the row as it was: the term moves only when the holder changes.
    row = conn.execute(
        sa.update(t.leadership)
        .where(_l.name == name, sa.or_(_l.holder == holder, _l.expires_at < now))
        .values(
            term=sa.case((_l.holder == holder, _l.term), else_=_l.term + 1),
            holder=holder,
            expires_at=now + ttl,
        )
        .returning(_l.term)
    ).first()
    return None if row is None else int(row.term)


def release_leadership(conn: Connection, name: str, holder: str) -> None:
    conn.execute(
        sa.update(t.leadership).where(_l.name == name, _l.holder == holder).values(expires_at=0.0)
    )


def holds_leadership(conn: Connection, name: str, holder: str, term: int) -> bool:
    # FOR SHARE (PostgreSQL; SQLite's one writer needs none): a takeover waits until
    # this transaction, and the fenced write in it, has ended.
    row = conn.execute(
        sa.select(_l.holder, _l.term, (_l.expires_at > _db_now(conn)).label("live"))
        .where(_l.name == name)
        .with_for_update(read=True)
    ).first()
    return row is not None and row.holder == holder and row.term == term and bool(row.live)


def claim_retries(
    conn: Connection,
    now: dt.datetime,
    until: dt.datetime,
    limit: int,
    lease: Callable[[Any], Lease],
) -> list[Lease]:
    c = t.leases.c
    due = (
        sa.select(c.id)
        .where(c.state == "revoking", c.next_attempt_at <= now)
        .order_by(c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    rows = conn.execute(
        sa.update(t.leases)
        .where(c.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=until)
        .returning(*t.leases.c)
    )
    return sorted((lease(r) for r in rows), key=lambda x: x.id)


class Notifications:
    """LISTEN on its own autocommit connection, outside the pool (a pooled connection
    would be handed to others between waits). A lost connection is reopened at the next
    wait; until then the wait is a plain timeout, and the feed's polling covers it."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = threading.Event()

    def _connected(self) -> psycopg.Connection[Any] | None:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._dsn, autocommit=True, connect_timeout=2)
                self._conn.execute(f"LISTEN {CHANNEL}")
            except psycopg.Error as exc:
                log.warning(
                    "cannot listen for events; polling", extra={"error": type(exc).__name__}
                )
                self._conn = None
        return self._conn

    def wait(self, timeout: float) -> None:
        conn = None if self._closed.is_set() else self._connected()
        if conn is None:
            self._closed.wait(timeout)
            return
        try:
            for _ in conn.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error:
            with contextlib.suppress(psycopg.Error):
                conn.close()
            self._conn = None

    def close(self) -> None:
        self._closed.set()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
