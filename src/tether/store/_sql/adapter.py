from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from tether._internal.canonical import canonical_json
from tether._internal.timeutil import parse_time, utcnow
from tether.model import AuditRecord
from tether.store._port import ApiTokenRecord, IdentityFilter, SealedRecord, Spec
from tether.store._sql import tables as t
from tether.store.errors import StoreError, StoreUnavailable

_MIGRATIONS = Path(__file__).parent / "migrations"


def _engine_url(url: str) -> str:
    # Plain postgresql:// URLs mean psycopg 3, the only PostgreSQL driver Tether ships.
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _create_engine(url: str) -> Engine:
    url = _engine_url(url)
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Take transaction control away from pysqlite so BEGIN IMMEDIATE is ours to send.
            dbapi_conn.isolation_level = None
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            write = conn.get_execution_options().get("tether_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return sa.create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


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
        "spec": canonical_json(spec),
        "updated_at": now,
    }


def _audit_record(row: Any) -> AuditRecord:
    return AuditRecord(
        seq=row.seq,
        ts=row.ts,
        action=row.action,
        actor=row.actor,
        result=row.result,
        identity_id=row.identity_id,
        owner_id=row.owner_id,
        task_id=row.task_id,
        reason=row.reason,
        justification=row.justification,
        details=row.details,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


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


class _SqlTx:
    def __init__(self, conn: Connection) -> None:
        self._c = conn
        self.after_commit: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        self.after_commit.append(callback)

    def _upsert(
        self,
        table: sa.Table,
        values: dict[str, Any],
        keys: Sequence[str],
        on_insert_only: dict[str, Any] | None = None,
    ) -> None:
        insert: Any
        if self._c.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        stmt = insert(table).values(**values, **(on_insert_only or {}))
        stmt = stmt.on_conflict_do_update(
            index_elements=list(keys),
            set_={k: stmt.excluded[k] for k in values if k not in keys},
        )
        self._c.execute(stmt)

    def get_meta(self, key: str) -> bytes | None:
        row = self._c.execute(sa.select(t.meta.c.value).where(t.meta.c.key == key)).first()
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
        self._upsert(t.identities, _identity_row(spec, now), ["id"], {"created_at": now})

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
        row = self._c.execute(
            sa.select(t.audit_head.c.seq, t.audit_head.c.hash)
            .where(t.audit_head.c.id == 1)
            .with_for_update()
        ).one()
        return int(row.seq), str(row.hash)

    def append_audit(self, records: Sequence[AuditRecord]) -> None:
        if not records:
            return
        self._c.execute(
            t.audit_log.insert(),
            [
                {
                    "seq": r.seq,
                    "ts": r.ts,
                    "action": r.action,
                    "actor": r.actor,
                    "result": r.result,
                    "identity_id": r.identity_id,
                    "owner_id": r.owner_id,
                    "task_id": r.task_id,
                    "reason": r.reason,
                    "justification": r.justification,
                    "details": r.details,
                    "prev_hash": r.prev_hash,
                    "hash": r.hash,
                }
                for r in records
            ],
        )
        last = records[-1]
        self._c.execute(
            sa.update(t.audit_head)
            .where(t.audit_head.c.id == 1)
            .values(seq=last.seq, hash=last.hash)
        )

    def list_audit(
        self, after_seq: int, limit: int, identity_id: str | None = None
    ) -> list[AuditRecord]:
        query = (
            sa.select(t.audit_log)
            .where(t.audit_log.c.seq > after_seq)
            .order_by(t.audit_log.c.seq)
            .limit(limit)
        )
        if identity_id is not None:
            query = query.where(t.audit_log.c.identity_id == identity_id)
        return [_audit_record(r) for r in self._c.execute(query)]

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
        row = self._c.execute(
            sa.select(t.api_tokens).where(t.api_tokens.c.token_hash == token_hash)
        ).first()
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


class SqlStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self._engine = _create_engine(url)
        self.dialect = self._engine.dialect.name
        # SQLite has one writer; queueing writers here beats spinning on SQLITE_BUSY.
        self._writer_lock: threading.Lock | None = (
            threading.Lock() if self.dialect == "sqlite" else None
        )

    @property
    def engine(self) -> Engine:
        return self._engine

    def migrate(self) -> None:
        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        try:
            with self._engine.connect() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
                conn.commit()
        except sa.exc.SQLAlchemyError as exc:
            raise _translate(exc) from None

    @contextmanager
    def transaction(self) -> Iterator[_SqlTx]:
        with self._writer_lock or nullcontext():
            try:
                connection = self._engine.connect().execution_options(tether_write=True)
                with connection as conn, conn.begin():
                    tx = _SqlTx(conn)
                    yield tx
            except sa.exc.SQLAlchemyError as exc:
                raise _translate(exc) from None
        for callback in tx.after_commit:
            callback()

    @contextmanager
    def read(self) -> Iterator[_SqlTx]:
        try:
            with self._engine.connect() as conn, conn.begin():
                yield _SqlTx(conn)
        except sa.exc.SQLAlchemyError as exc:
            raise _translate(exc) from None

    def iter_audit(self, batch: int = 20_000) -> Iterator[AuditRecord]:
        after = 0
        columns = [
            t.audit_log.c[name]
            for name in (
                "seq",
                "ts",
                "action",
                "actor",
                "result",
                "identity_id",
                "owner_id",
                "task_id",
                "reason",
                "justification",
                "details",
                "prev_hash",
                "hash",
            )
        ]
        while True:
            try:
                with self._engine.connect() as conn:
                    rows = conn.execute(
                        sa.select(*columns)
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
