from __future__ import annotations

import datetime as dt
import fcntl
import functools
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from tether._internal.canonical import canonical_json
from tether._internal.timeutil import parse_time, utcnow
from tether.model import (
    AUDIT_RECORD_FIELDS,
    AgentRun,
    AuditRecord,
    Lease,
    LeaseState,
    Placement,
    Task,
    TaskStatus,
)
from tether.store._group import GroupCommit
from tether.store._port import (
    ApiTokenRecord,
    AuditFilter,
    ClusterEvent,
    IdentityFilter,
    JoinTokenRecord,
    LeaseFilter,
    PollOnly,
    SealedRecord,
    Spec,
    SuspectLeases,
    T,
    TaskFilter,
    Tx,
    WakeUps,
)
from tether.store._sql import _cluster
from tether.store._sql import tables as t
from tether.store._sql._engine import create_engine, migrate
from tether.store._sql._fast import statements
from tether.store._sql._govern import GovernSql
from tether.store._sql._keys import KeysSql
from tether.store.errors import StoreError, StoreUnavailable


def _translate(exc: sa.exc.SQLAlchemyError) -> StoreError:
    # SQLAlchemy messages embed statement parameters, which may be ciphertext or hashes:
    # only the exception class travels on.
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return StoreUnavailable(f"database unavailable ({type(exc.orig).__name__})")
    if isinstance(exc, sa.exc.IntegrityError):
        return StoreError(f"database constraint violated ({type(exc.orig).__name__})")
    return StoreError(f"database error ({type(exc).__name__})")


def _identity_row(spec: Spec, now: dt.datetime) -> dict[str, Any]:
    approval = spec.get("approval")
    expires = spec.get("expires")
    return {
        "id": spec["id"],
        "kind": spec["kind"],
        "owner_id": spec["owner"],
        "environment": spec["environment"],
        "status": spec.get("status", "active"),
        "vendor_id": spec.get("vendor"),
        "approval_expires_at": None if approval is None else parse_time(approval["expires"]),
        "expires_at": None if expires is None else parse_time(expires),
        "placement": Placement.of_spec(spec).key,
        "spec": canonical_json(spec),
        "updated_at": now,
    }


def _audit_row(record: AuditRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in AUDIT_RECORD_FIELDS}


# Statements on the request path are built once: building a SQLAlchemy statement costs
# more than executing it on SQLite.
_by_id: sa.BindParameter[str] = sa.bindparam("id_")
_GET_META = sa.select(t.meta.c.value).where(t.meta.c.key == _by_id)
_TOKEN_BY_HASH = sa.select(t.api_tokens).where(t.api_tokens.c.token_hash == _by_id)
_UPDATE_LEASE = sa.update(t.leases).where(t.leases.c.id == _by_id)
#: The audit table's columns in AuditRecord's field order: `AuditRecord(*row)` reads a row.
_AUDIT_COLUMNS = [t.audit_log.c[name] for name in AUDIT_RECORD_FIELDS]
_UPSERTS: dict[tuple[str, str], Any] = {}


def _upsert_statement(dialect: str, table: sa.Table, keys: Sequence[str]) -> Any:
    statement = _UPSERTS.get((dialect, table.name))
    if statement is None:
        insert: Any
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table)
        statement = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={c.name: stmt.excluded[c.name] for c in table.c if c.name not in keys},
        )
        _UPSERTS[(dialect, table.name)] = statement
    return statement


_LIVE = (LeaseState.PENDING.value, LeaseState.ACTIVE.value)
_CHUNK = 2000  # ids per IN (...) list: well under every backend's parameter limit
#: Parent ids in one children statement (a cascade's page): SQLite allows 32,766
#: parameters, PostgreSQL 65,535.
_MAX_PARENTS = 10_000
#: Dashboard sessions are kept this long past their expiry, then removed.
_SESSION_KEPT = dt.timedelta(days=1)


def _task_row(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "identity_id": task.identity_id,
        "name": task.name,
        "status": task.status.value,
        "created_at": task.created_at,
        "deadline": task.deadline,
        "attestation_expires_at": task.attestation_expires_at,
        "ends_at": task.ends_at,
        "issuer_id": task.issuer_id,
        "run_key": task.run_key,
        "implicit": int(task.implicit),
        "ended_at": task.ended_at,
        "end_reason": task.end_reason,
        "claims": canonical_json(dict(task.claims)),
        "run": None if task.run is None else canonical_json(task.run.to_spec()),
    }


def _task(row: Any) -> Task:
    return Task(
        id=row.id,
        identity_id=row.identity_id,
        name=row.name,
        status=TaskStatus(row.status),
        created_at=row.created_at,
        deadline=row.deadline,
        attestation_expires_at=row.attestation_expires_at,
        issuer_id=row.issuer_id,
        run_key=row.run_key,
        implicit=bool(row.implicit),
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        claims=json.loads(row.claims),
        run=None if row.run is None else AgentRun.from_spec(json.loads(row.run)),
    )


def _lease_row(lease: Lease) -> dict[str, Any]:
    return {
        "id": lease.id,
        "identity_id": lease.identity_id,
        "owner_id": lease.owner_id,
        "provider": lease.provider,
        "issued_at": lease.issued_at,
        "expires_at": lease.expires_at,
        "state": lease.state.value,
        "task_id": lease.task_id,
        "parent_id": lease.parent_id,
        "profile_id": lease.profile_id,
        "scopes": " ".join(lease.scopes),
        "audience": lease.audience,
        "token_hash": lease.token_hash,
        "actor": lease.actor,
        "target": lease.target,
        "revoke_attempts": lease.revoke_attempts,
        "next_attempt_at": lease.next_attempt_at,
        "ended_at": lease.ended_at,
        "end_reason": lease.end_reason,
        "placement": None if lease.placement is None else lease.placement.key,
        "delegation": " ".join(lease.delegation) or None,
    }


def _lease(row: Any) -> Lease:
    return Lease(
        id=row.id,
        identity_id=row.identity_id,
        owner_id=row.owner_id,
        provider=row.provider,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        state=LeaseState(row.state),
        task_id=row.task_id,
        parent_id=row.parent_id,
        profile_id=row.profile_id,
        scopes=tuple(row.scopes.split()) if row.scopes else (),
        audience=row.audience,
        token_hash=row.token_hash,
        actor=row.actor,
        target=row.target,
        revoke_attempts=row.revoke_attempts,
        next_attempt_at=row.next_attempt_at,
        ended_at=row.ended_at,
        end_reason=row.end_reason,
        placement=None if row.placement is None else _placement(row.placement),
        delegation=tuple(row.delegation.split()) if row.delegation else (),
    )


@functools.lru_cache(maxsize=4096)
def _placement(key: str) -> Placement:
    # A few distinct placements stand for every lease: parse each once.
    return Placement.from_key(key)


def _token_record(row: Any) -> ApiTokenRecord:
    return ApiTokenRecord(
        id=row.id,
        token_hash=row.token_hash,
        name=row.name,
        roles=tuple(json.loads(row.roles)),
        created_at=row.created_at,
        created_by=row.created_by,
        expires_at=row.expires_at,
        revoked_at=row.revoked_at,
    )


def _driver_error(exc: Exception, dbapi: Any) -> StoreError:
    """`_translate` for errors raised by the driver itself (the fast statements)."""
    if isinstance(exc, dbapi.OperationalError | dbapi.InterfaceError):
        return StoreUnavailable(f"database unavailable ({type(exc).__name__})")
    if isinstance(exc, dbapi.IntegrityError):
        return StoreError(f"database constraint violated ({type(exc).__name__})")
    return StoreError(f"database error ({type(exc).__name__})")


def _join_token(row: Any) -> JoinTokenRecord:
    return JoinTokenRecord(
        id=row.id,
        token_hash=row.token_hash,
        identity_id=row.identity_id,
        created_at=row.created_at,
        expires_at=row.expires_at,
        created_by=row.created_by,
        used_at=row.used_at,
    )


class _Held:
    """The inserts a group commit's transaction holds back (tasks, leases, audit entries)
    so that each table's rows of every issuance in it go in one statement."""

    __slots__ = ("audit", "head", "leases", "task_ids", "tasks")

    def __init__(self) -> None:
        self.tasks: list[list[Any]] = []
        self.task_ids: set[str] = set()
        self.leases: list[list[Any]] = []
        self.audit: list[list[Any]] = []
        self.head: tuple[int, str] | None = None

    def __bool__(self) -> bool:
        return bool(self.tasks or self.leases or self.audit)


class _SqlTx(GovernSql, KeysSql):
    def __init__(self, conn: Connection, *, hold_inserts: bool = False) -> None:
        self._conn = conn
        self.after_commit: list[Callable[[], None]] = []
        self._head: tuple[int, str] | None = None
        self._fast = statements(conn.dialect.name)
        self._cursor: Any = None
        self._held = _Held() if hold_inserts else None

    @property
    def _c(self) -> Connection:
        # Every statement but the held inserts goes through here (or `_driver`): what is
        # held is written first, so a read sees this transaction's own writes.
        if self._held:
            self.write_held()
        return self._conn

    def _driver(self, sql: str, params: Any, many: bool = False) -> Any:
        """Run one of the fast statements on the driver's cursor, in this transaction."""
        if self._held:
            self.write_held()
        return self._run(sql, params, many)

    def _run(self, sql: str, params: Any, many: bool = False) -> Any:
        dbapi = self._conn.dialect.loaded_dbapi
        try:
            if self._cursor is None:
                self._cursor = self._conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            if many:
                self._cursor.executemany(sql, params)
            else:
                self._cursor.execute(sql, params)
        except dbapi.Error as exc:
            raise _driver_error(exc, dbapi) from None
        return self._cursor

    def write_held(self) -> None:
        """Write the held inserts: tasks before the leases that name them, then the
        audit entries and the chain's new head."""
        held = self._held
        if not held:
            return
        self._held = None  # what runs below must not come back here
        try:
            for table, rows in (
                ("tasks", held.tasks),
                ("leases", held.leases),
                ("audit_log", held.audit),
            ):
                self._insert_rows(table, rows)
            if held.head is not None:
                self._run(self._fast.update_audit_head, held.head)
        finally:
            self._held = _Held()

    def _insert_rows(self, table: str, rows: list[list[Any]]) -> None:
        fast = self._fast
        step = fast.rows_per_insert(table)
        for start in range(0, len(rows), step):
            chunk = rows[start : start + step]
            self._run(fast.insert_many(table, len(chunk)), [v for row in chunk for v in row])

    def on_commit(self, callback: Callable[[], None]) -> None:
        self.after_commit.append(callback)

    def _upsert(
        self,
        table: sa.Table,
        values: dict[str, Any],
        keys: Sequence[str],
        on_insert_only: dict[str, Any] | None = None,
    ) -> None:
        if on_insert_only:
            # Columns kept from the first insert (created_at) need a statement of their own.
            insert: Any
            if self._c.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            stmt = insert(table).values(**values, **on_insert_only)
            self._c.execute(
                stmt.on_conflict_do_update(
                    index_elements=list(keys),
                    set_={k: stmt.excluded[k] for k in values if k not in keys},
                )
            )
            return
        self._c.execute(_upsert_statement(self._c.dialect.name, table, keys), values)

    def get_meta(self, key: str) -> bytes | None:
        row = self._c.execute(_GET_META, {"id_": key}).first()
        return None if row is None else bytes(row.value)

    def put_meta(self, key: str, value: bytes) -> None:
        self._upsert(t.meta, {"key": key, "value": value}, ["key"])

    def get_sealed(self, record_id: str) -> SealedRecord | None:
        row = self._c.execute(
            sa.select(t.sealed_records).where(t.sealed_records.c.id == record_id)
        ).first()
        if row is None:
            return None
        return SealedRecord(row.id, row.purpose, row.term, bytes(row.ciphertext))

    def put_sealed(self, record: SealedRecord) -> None:
        self._upsert(
            t.sealed_records,
            {
                "id": record.id,
                "purpose": record.purpose,
                "term": record.term,
                "ciphertext": record.ciphertext,
                "updated_at": utcnow(),
            },
            ["id"],
        )

    def sealed_below_term(self, term: int, limit: int) -> list[SealedRecord]:
        rows = self._c.execute(
            sa.select(t.sealed_records)
            .where(t.sealed_records.c.term < term)
            .order_by(t.sealed_records.c.id)
            .limit(limit)
        )
        return [SealedRecord(r.id, r.purpose, r.term, bytes(r.ciphertext)) for r in rows]

    def estate_objects(self, type_: str) -> dict[str, Spec]:
        rows = self._c.execute(
            sa.select(t.estate_objects.c.id, t.estate_objects.c.spec).where(
                t.estate_objects.c.type == type_
            )
        )
        return {r.id: json.loads(r.spec) for r in rows}

    def put_estate_object(self, type_: str, object_id: str, spec: Spec) -> None:
        self._upsert(
            t.estate_objects,
            {"type": type_, "id": object_id, "spec": canonical_json(spec), "updated_at": utcnow()},
            ["type", "id"],
        )

    def delete_estate_object(self, type_: str, object_id: str) -> None:
        self._c.execute(
            sa.delete(t.estate_objects).where(
                t.estate_objects.c.type == type_, t.estate_objects.c.id == object_id
            )
        )

    def identity_specs(self) -> dict[str, Spec]:
        rows = self._c.execute(sa.select(t.identities.c.id, t.identities.c.spec))
        return {r.id: json.loads(r.spec) for r in rows}

    def get_identity(self, identity_id: str) -> Spec | None:
        row = self._c.execute(
            sa.select(t.identities.c.spec).where(t.identities.c.id == identity_id)
        ).first()
        return None if row is None else dict(json.loads(row.spec))

    def put_identity(self, spec: Spec) -> None:
        now = utcnow()
        row = _identity_row(spec, now)
        insert: Any
        if self._c.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(t.identities).values(**row, created_at=now)
        c = t.identities.c
        changes: dict[str, Any] = {k: stmt.excluded[k] for k in row if k != "id"}
        # A changed placement is remembered, so the sweep compares this identity's
        # leases with it (identities never moved cost the sweep nothing).
        changes["moved_at"] = sa.case(
            (c.placement.is_distinct_from(stmt.excluded.placement), now), else_=c.moved_at
        )
        self._c.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=changes))

    def list_identities(self, where: IdentityFilter) -> list[Spec]:
        c = t.identities.c
        query = sa.select(c.spec).order_by(c.id).limit(where.limit)
        for column, value in (
            (c.kind, where.kind),
            (c.owner_id, where.owner_id),
            (c.environment, where.environment),
            (c.status, where.status),
        ):
            if value is not None:
                query = query.where(column == value)
        if where.owner_in is not None:
            query = query.where(c.owner_id.in_(where.owner_in))
        if where.after_id is not None:
            query = query.where(c.id > where.after_id)
        return [json.loads(r.spec) for r in self._c.execute(query)]

    def audit_head(self) -> tuple[int, str]:
        # Locked by the first read; this transaction's own appends move it after that.
        # The head row is not among the held inserts: reading it writes none of them.
        if self._head is None:
            seq, digest = self._run(self._fast.audit_head, ()).fetchone()
            self._head = (int(seq), str(digest))
        return self._head

    def append_audit(self, records: Sequence[AuditRecord]) -> None:
        if not records:
            return
        fast = self._fast
        rows = [fast.audit.params(_audit_row(r)) for r in records]
        last = records[-1]
        if self._held is not None:
            self._held.audit += rows
            self._held.head = (last.seq, last.hash)
        else:
            self._driver(fast.insert_audit, rows, many=True)
            self._driver(fast.update_audit_head, (last.seq, last.hash))
        self._head = (last.seq, last.hash)

    def list_audit(
        self,
        after_seq: int,
        limit: int,
        identity_id: str | None = None,
        action_prefix: str | None = None,
    ) -> list[AuditRecord]:
        return self.search_audit(AuditFilter.listing(after_seq, limit, identity_id, action_prefix))

    def search_audit(self, where: AuditFilter) -> list[AuditRecord]:
        c = t.audit_log.c
        query = sa.select(*_AUDIT_COLUMNS)
        for column, value in (
            (c.actor, where.actor),
            (c.identity_id, where.identity_id),
            (c.result, where.result),
        ):
            if value is not None:
                query = query.where(column == value)
        prefix = where.action_prefix
        if prefix and self._c.dialect.name == "sqlite":
            # A range, not LIKE: SQLite's LIKE ignores case and so cannot use the index
            # (a scan of the whole log). Its BINARY collation sorts every string with the
            # prefix in the range; PostgreSQL's collations need not, so it keeps LIKE.
            upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            query = query.where(c.action >= prefix, c.action < upper)
        elif prefix is not None:
            query = query.where(c.action.startswith(prefix, autoescape=True))
        elif where.action is not None:
            query = query.where(c.action == where.action)
        if where.since is not None:
            query = query.where(c.ts >= where.since)
        if where.until is not None:
            query = query.where(c.ts < where.until)
        if where.before_seq is not None:
            query = query.where(c.seq < where.before_seq)
        if where.after_seq is not None:
            query = query.where(c.seq > where.after_seq)
        query = query.order_by(c.seq.desc() if where.newest_first else c.seq).limit(where.limit)
        return [AuditRecord(*r) for r in self._c.execute(query)]

    # -- tasks --
    def put_task(self, task: Task) -> None:
        fast = self._fast
        row = fast.tasks.params(_task_row(task))
        held = self._held
        if held is None:
            self._driver(fast.put_task, row)
            return
        if task.id in held.task_ids:
            self.write_held()  # one upsert may not touch a row twice (PostgreSQL)
            held = self._held
            assert held is not None
        held.tasks.append(row)
        held.task_ids.add(task.id)

    def get_task(self, task_id: str) -> Task | None:
        fast = self._fast
        row = self._driver(fast.task_by_id, (task_id,)).fetchone()
        return None if row is None else _task(fast.tasks.read(row))

    def active_task_for_run(self, identity_id: str, run_key: str) -> Task | None:
        c = t.tasks.c
        row = self._c.execute(
            sa.select(t.tasks).where(
                c.identity_id == identity_id, c.run_key == run_key, c.status == "active"
            )
        ).first()
        return None if row is None else _task(row)

    def list_tasks(self, where: TaskFilter) -> list[Task]:
        c = t.tasks.c
        query = sa.select(t.tasks).order_by(c.id).limit(where.limit)
        if where.identity_id is not None:
            query = query.where(c.identity_id == where.identity_id)
        if where.status is not None:
            query = query.where(c.status == where.status)
        if where.after_id is not None:
            query = query.where(c.id > where.after_id)
        if where.agent_runs:
            query = query.where(c.run.is_not(None))
        if where.owner_in is not None:
            owned = sa.select(t.identities.c.id).where(t.identities.c.owner_id.in_(where.owner_in))
            query = query.where(c.identity_id.in_(owned))
        return [_task(r) for r in self._c.execute(query)]

    def tasks_due(self, now: dt.datetime, limit: int) -> list[Task]:
        c = t.tasks.c
        rows = self._c.execute(
            sa.select(t.tasks)
            .where(c.status == "active", c.ends_at <= now)
            .order_by(c.ends_at)
            .limit(limit)
        )
        return [_task(r) for r in rows]

    # -- leases --
    def insert_leases(self, leases: Sequence[Lease]) -> None:
        if leases:
            fast = self._fast
            rows = [fast.leases.params(_lease_row(lease)) for lease in leases]
            if self._held is not None:
                self._held.leases += rows
            else:
                self._driver(fast.insert_lease, rows, many=True)

    def get_lease(self, lease_id: str) -> Lease | None:
        fast = self._fast
        row = self._driver(fast.lease_by_id, (lease_id,)).fetchone()
        return None if row is None else _lease(fast.leases.read(row))

    def lease_by_token_hash(self, token_hash: str) -> Lease | None:
        fast = self._fast
        row = self._driver(fast.lease_by_token_hash, (token_hash,)).fetchone()
        return None if row is None else _lease(fast.leases.read(row))

    def put_lease(self, lease: Lease) -> None:
        row = _lease_row(lease)
        del row["id"]
        result = self._c.execute(_UPDATE_LEASE, {**row, "id_": lease.id})
        if not result.rowcount:
            raise StoreError("no such lease")

    def end_leases(
        self, lease_ids: Sequence[str], state: LeaseState, at: dt.datetime, reason: str
    ) -> list[Lease]:
        fast = self._fast
        sources = [*_LIVE, LeaseState.REVOKING.value] if state is LeaseState.REVOKED else _LIVE
        moved: list[Lease] = []
        for start in range(0, len(lease_ids), _CHUNK):
            chunk = list(lease_ids[start : start + _CHUNK])
            sql = fast.end_leases(len(chunk), len(sources), revoking=state is LeaseState.REVOKING)
            params = (state.value, reason, fast.time_in(at), *chunk, *sources)
            rows = self._driver(sql, params).fetchall()
            moved.extend(_lease(fast.leases.read(r)) for r in rows)
        return moved

    def find_leases(self, where: LeaseFilter) -> list[Lease]:
        parents = where.parent_ids
        if (
            parents is not None
            and len(parents) <= _MAX_PARENTS
            and where == LeaseFilter(parent_ids=parents, states=where.states, limit=where.limit)
        ):
            return self._children(parents, where.states, where.limit)
        c = t.leases.c
        state: sa.ColumnElement[Any] = c.state
        if where.parent_ids is not None or where.task_id is not None:
            # Not an index term (`state || ''`): without statistics SQLite would walk the
            # state index over every live lease rather than the parent or task index.
            state = state.concat("")
        terms: list[sa.ColumnElement[bool]] = [state.in_([s.value for s in where.states])]
        for column, value in (
            (c.task_id, where.task_id),
            (c.identity_id, where.identity_id),
            (c.owner_id, where.owner_id),
            (c.provider, where.provider),
        ):
            if value is not None:
                terms.append(column == value)
        if where.parent_ids is not None:
            terms.append(c.parent_id.in_(where.parent_ids))
        if where.identity_ids is not None and where.suspect is None:
            terms.append(c.identity_id.in_(where.identity_ids))
        if where.after_id is not None:
            terms.append(c.id > where.after_id)
        if where.suspect is not None:
            return self._suspect(where, where.suspect, terms)
        query = sa.select(t.leases).where(*terms).order_by(c.id).limit(where.limit)
        return [_lease(r) for r in self._c.execute(query)]

    def _suspect(
        self, where: LeaseFilter, suspect: SuspectLeases, terms: list[sa.ColumnElement[bool]]
    ) -> list[Lease]:
        """find_leases narrowed to `suspect`, after the filter's other `terms`."""
        c = t.leases.c
        # Each way to be suspect on its own index, so that 20,000 fresh leases of one
        # identity are not walked: revoking (state), old (state, issued_at), delegated
        # (the partial index). The chain is stored space-joined: n hops, n-1 spaces.
        chain: sa.ColumnElement[bool] = c.delegation.is_not(None)
        if suspect.chain > 1:
            chain = sa.and_(chain, c.delegation.like("%" + " %" * (suspect.chain - 1)))
        of: list[sa.ColumnElement[bool]] = []
        not_by_identity: list[sa.ColumnElement[bool]] = []
        if where.identity_ids is not None:
            of = [c.identity_id.in_(where.identity_ids)]
            # Old leases by age first: the identity index would walk every lease it holds.
            not_by_identity = [c.identity_id.concat("").in_(where.identity_ids)]
        ways = [
            sa.select(t.leases).where(*terms, *of, c.state == LeaseState.REVOKING.value),
            sa.select(t.leases).where(
                *terms, *not_by_identity, c.issued_at <= suspect.issued_before
            ),
            sa.select(t.leases).where(*terms, *of, chain),
        ]
        found = sa.union(*ways).subquery()
        query = sa.select(found).order_by(found.c.id).limit(where.limit)
        return [_lease(r) for r in self._c.execute(query)]

    def _children(
        self, parent_ids: Sequence[str], states: Sequence[LeaseState], limit: int
    ) -> list[Lease]:
        """find_leases by parent ids alone, on the driver: SQLAlchemy renders an IN of
        thousands of values anew on each execution."""
        if not parent_ids:
            return []
        fast = self._fast
        sql = fast.children(len(parent_ids), len(states))
        params = (*parent_ids, *(s.value for s in states), min(limit, 2**62))
        rows = self._driver(sql, params).fetchall()
        return [_lease(fast.leases.read(r)) for r in rows]

    def leases_due(self, now: dt.datetime, limit: int) -> list[Lease]:
        fast = self._fast
        rows = self._driver(fast.leases_due, (fast.time_in(now), limit)).fetchall()
        return [_lease(fast.leases.read(r)) for r in rows]

    def leases_to_retry(self, now: dt.datetime, limit: int) -> list[Lease]:
        c = t.leases.c
        rows = self._c.execute(
            sa.select(t.leases)
            .where(c.state == "revoking", c.next_attempt_at <= now)
            .order_by(c.id)
            .limit(limit)
        )
        return [_lease(r) for r in rows]

    def live_lease_ids(self, lease_ids: Sequence[str]) -> set[str]:
        c = t.leases.c
        found: set[str] = set()
        for start in range(0, len(lease_ids), _CHUNK):
            chunk = list(lease_ids[start : start + _CHUNK])
            # By id, not by a state index (see _fast.end_leases).
            rows = self._c.execute(
                sa.select(c.id).where(c.id.in_(chunk), c.state.concat("").in_(_LIVE))
            )
            found.update(r.id for r in rows)
        return found

    def stale_pending(self, before: dt.datetime, limit: int) -> list[Lease]:
        c = t.leases.c
        rows = self._c.execute(
            sa.select(t.leases)
            .where(c.state == "pending", c.issued_at < before)
            .order_by(c.issued_at)
            .limit(limit)
        )
        return [_lease(r) for r in rows]

    def count_leases(self, state: LeaseState) -> int:
        c = t.leases.c
        return int(
            self._c.execute(
                sa.select(sa.func.count()).select_from(t.leases).where(c.state == state.value)
            ).scalar_one()
        )

    def lease_activity(self, since: dt.datetime) -> list[tuple[dt.datetime, int, int]]:
        c = t.leases.c
        sqlite = self._c.dialect.name == "sqlite"
        hours: dict[dt.datetime, list[int]] = {}
        ended = (LeaseState.REVOKED.value, LeaseState.EXPIRED.value)
        for slot, column, where in (
            (0, c.issued_at, c.issued_at >= since),
            (1, c.ended_at, sa.and_(c.ended_at >= since, c.state.in_(ended))),
        ):
            # SQLite keeps "YYYY-MM-DD HH:MM:SS" text in UTC: its first 13 characters are
            # the hour. PostgreSQL truncates the timestamp itself.
            bucket = sa.func.substr(column, 1, 13) if sqlite else sa.func.date_trunc("hour", column)
            query = sa.select(bucket, sa.func.count()).where(where).group_by(bucket)
            for value, count in self._c.execute(query):
                hour = (
                    dt.datetime.strptime(value, "%Y-%m-%d %H").replace(tzinfo=dt.UTC)
                    if sqlite
                    else value.astimezone(dt.UTC)
                )
                hours.setdefault(hour, [0, 0])[slot] += int(count)
        return [(hour, n[0], n[1]) for hour, n in sorted(hours.items())]

    def unjustified_identities(
        self,
        now: dt.datetime,
        ended_vendor_ids: Sequence[str],
        limit: int,
        after_id: str | None = None,
        ended_owner_ids: Sequence[str] = (),
    ) -> list[Spec]:
        i, lc, o = t.identities.c, t.leases.c, t.estate_objects.c

        def holds_live(*where: Any) -> Any:
            return sa.exists().where(lc.identity_id == i.id, lc.state.in_(_LIVE), *where)

        owners = sa.select(o.id).where(o.type == "owner")
        vendors = sa.select(o.id).where(o.type == "vendor")
        ended = sa.or_(
            i.status != "active",
            i.approval_expires_at <= now,
            i.expires_at <= now,
            i.vendor_id.in_(list(ended_vendor_ids)) if ended_vendor_ids else sa.false(),
            sa.and_(i.vendor_id.is_not(None), i.vendor_id.not_in(vendors)),
            i.owner_id.not_in(owners),
            i.owner_id.in_(list(ended_owner_ids)) if ended_owner_ids else sa.false(),
        )
        # With the (identity, state, placement) index, each probe is one index seek:
        # a live lease with a smaller or a larger placement key than the identity's.
        moved = sa.and_(
            i.moved_at.is_not(None),
            sa.or_(holds_live(lc.placement < i.placement), holds_live(lc.placement > i.placement)),
        )
        query = sa.select(i.spec).where(sa.or_(sa.and_(ended, holds_live()), moved))
        if after_id is not None:
            query = query.where(i.id > after_id)
        rows = self._c.execute(query.order_by(i.id).limit(limit))
        return [json.loads(r.spec) for r in rows]

    # -- attestation replay and join tokens --
    def remember_jti(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool:
        insert: Any
        if self._c.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        inserted = self._c.execute(
            insert(t.seen_jti)
            .values(issuer=issuer, jti=jti, expires_at=expires_at)
            .on_conflict_do_nothing()
            .returning(t.seen_jti.c.jti)
        ).first()
        return inserted is not None

    def forget_jti_before(self, now: dt.datetime) -> int:
        result = self._c.execute(sa.delete(t.seen_jti).where(t.seen_jti.c.expires_at <= now))
        return int(result.rowcount or 0)

    def put_join_token(self, record: JoinTokenRecord) -> None:
        self._c.execute(
            t.join_tokens.insert().values(
                id=record.id,
                token_hash=record.token_hash,
                identity_id=record.identity_id,
                created_at=record.created_at,
                expires_at=record.expires_at,
                created_by=record.created_by,
                used_at=record.used_at,
            )
        )

    def consume_join_token(self, token_hash: str, now: dt.datetime) -> JoinTokenRecord | None:
        c = t.join_tokens.c
        row = self._c.execute(
            sa.update(t.join_tokens)
            .where(c.token_hash == token_hash, c.used_at.is_(None), c.expires_at > now)
            .values(used_at=now)
            .returning(*t.join_tokens.c)
        ).first()
        return None if row is None else _join_token(row)

    def join_token_by_hash(self, token_hash: str) -> JoinTokenRecord | None:
        row = self._c.execute(
            sa.select(t.join_tokens).where(t.join_tokens.c.token_hash == token_hash)
        ).first()
        return None if row is None else _join_token(row)

    def put_api_token(self, record: ApiTokenRecord) -> None:
        self._c.execute(
            t.api_tokens.insert().values(
                id=record.id,
                token_hash=record.token_hash,
                name=record.name,
                roles=json.dumps(list(record.roles)),
                created_at=record.created_at,
                created_by=record.created_by,
                expires_at=record.expires_at,
                revoked_at=record.revoked_at,
            )
        )

    def api_token_by_hash(self, token_hash: str) -> ApiTokenRecord | None:
        row = self._c.execute(_TOKEN_BY_HASH, {"id_": token_hash}).first()
        return None if row is None else _token_record(row)

    def list_api_tokens(self) -> list[ApiTokenRecord]:
        rows = self._c.execute(sa.select(t.api_tokens).order_by(t.api_tokens.c.created_at))
        return [_token_record(r) for r in rows]

    def revoke_api_token(self, token_id: str, at: dt.datetime) -> bool:
        result = self._c.execute(
            sa.update(t.api_tokens)
            .where(t.api_tokens.c.id == token_id, t.api_tokens.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        return bool(result.rowcount)

    # -- dashboard sessions --
    def put_web_session(self, session_id: str, token_id: str, expires_at: dt.datetime) -> None:
        c = t.web_sessions.c
        self._c.execute(sa.delete(t.web_sessions).where(c.expires_at < expires_at - _SESSION_KEPT))
        self._c.execute(
            sa.insert(t.web_sessions).values(
                id=session_id, token_id=token_id, expires_at=expires_at
            )
        )

    def web_session_live(self, session_id: str, now: dt.datetime) -> bool:
        c = t.web_sessions.c
        row = self._c.execute(
            sa.select(c.id).where(c.id == session_id, c.ended_at.is_(None), c.expires_at > now)
        ).first()
        return row is not None

    def end_web_session(self, session_id: str, at: dt.datetime) -> bool:
        c = t.web_sessions.c
        result = self._c.execute(
            sa.update(t.web_sessions)
            .where(c.id == session_id, c.ended_at.is_(None), c.expires_at > at)
            .values(ended_at=at)
        )
        return bool(result.rowcount)

    # -- cluster (the SQL is in _cluster.py) --
    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        _cluster.publish(self._c, kind, data)

    def events_head(self) -> int:
        return _cluster.events_head(self._c)

    def events_after(self, seq: int, limit: int) -> list[ClusterEvent]:
        return _cluster.events_after(self._c, seq, limit)

    def prune_events(self, before: dt.datetime) -> int:
        return _cluster.prune_events(self._c, before)

    def claim_leadership(self, name: str, holder: str, ttl: float) -> int | None:
        return _cluster.claim_leadership(self._c, name, holder, ttl)

    def release_leadership(self, name: str, holder: str) -> None:
        _cluster.release_leadership(self._c, name, holder)

    def holds_leadership(self, name: str, holder: str, term: int) -> bool:
        return _cluster.holds_leadership(self._c, name, holder, term)

    def claim_retries(self, now: dt.datetime, until: dt.datetime, limit: int) -> list[Lease]:
        return _cluster.claim_retries(self._c, now, until, limit, _lease)


class _SqliteWriterLock:
    """One writer at a time across every process on the database file (the workers of a
    node): threads queue on a lock, processes on `flock` of a file beside the database.
    SQLite's own busy handler would have them sleep and retry (1, 2, 5 ... 100 ms), which
    turns a contended commit into tens of milliseconds of nothing."""

    def __init__(self, database: str | None) -> None:
        self._threads = threading.Lock()
        self._fd: int | None = None
        if database and database != ":memory:":
            self._fd = os.open(f"{database}-writer.lock", os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> object:
        self._threads.acquire()
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._threads.release()
                raise
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class SqlStore:
    single_process = False

    def __init__(self, url: str, *, allow_existing_schema: bool = False) -> None:
        self.url = url
        self._allow_existing_schema = allow_existing_schema
        self._engine = create_engine(url)
        self.dialect = self._engine.dialect.name
        # SQLite has one writer; queueing writers here beats spinning on SQLITE_BUSY.
        self._writer_lock: AbstractContextManager[object] | None = (
            _SqliteWriterLock(self._engine.url.database) if self.dialect == "sqlite" else None
        )
        self._group = GroupCommit(self._held_transaction, finish=_SqlTx.write_held)

    @property
    def engine(self) -> Engine:
        return self._engine

    def migrate(self) -> None:
        migrate(self._engine, self.url, allow_existing_schema=self._allow_existing_schema)

    @contextmanager
    def transaction(self, *, hold_inserts: bool = False) -> Iterator[_SqlTx]:
        with self._writer_lock or nullcontext():
            try:
                connection = self._engine.connect().execution_options(tether_write=True)
                with connection as conn, conn.begin():
                    tx = _SqlTx(conn, hold_inserts=hold_inserts)
                    yield tx
                    tx.write_held()
            except sa.exc.SQLAlchemyError as exc:
                raise _translate(exc) from None
        for callback in tx.after_commit:
            callback()

    def _held_transaction(self) -> AbstractContextManager[_SqlTx]:
        # A group commit's round: its issuances' inserts go one statement per table.
        return self.transaction(hold_inserts=True)

    def commit_together(self, work: Callable[[Tx], T]) -> T:
        return self._group.run(work)

    @contextmanager
    def read(self) -> Iterator[_SqlTx]:
        try:
            with self._engine.connect() as conn, conn.begin():
                yield _SqlTx(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise _translate(exc) from None

    def iter_audit(self, batch: int = 20_000) -> Iterator[AuditRecord]:
        after = 0
        while True:
            try:
                with self._engine.connect() as conn:
                    rows = conn.execute(
                        sa.select(*_AUDIT_COLUMNS)
                        .where(t.audit_log.c.seq > after)
                        .order_by(t.audit_log.c.seq)
                        .limit(batch)
                    ).all()
            except sa.exc.SQLAlchemyError as exc:
                raise _translate(exc) from None
            if not rows:
                return
            for row in rows:
                yield AuditRecord(*row)
            after = rows[-1].seq

    def close(self) -> None:
        self._engine.dispose()
        if isinstance(self._writer_lock, _SqliteWriterLock):
            self._writer_lock.close()

    def wake_ups(self) -> WakeUps:
        if self.dialect == "postgresql":
            url = self._engine.url.set(drivername="postgresql")
            return _cluster.Notifications(url.render_as_string(hide_password=False))
        return PollOnly()
