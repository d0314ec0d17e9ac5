"""In-memory store for tests: same contract as the SQL adapter, verified by the same tests."""

from __future__ import annotations

import bisect
import copy
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace

from tether._internal.timeutil import parse_time, utcnow
from tether.model import AuditRecord, Lease, LeaseState, Placement, Task, TaskStatus
from tether.store._group import GroupCommit
from tether.store._port import (
    ApiTokenRecord,
    AuditFilter,
    ClusterEvent,
    GovernFilter,
    GovernRecord,
    IdentityFilter,
    JoinTokenRecord,
    KeyUsageCount,
    LeaseFilter,
    PollOnly,
    SealedRecord,
    Spec,
    T,
    TaskFilter,
    Tx,
    UsageRollup,
    WakeUps,
    coalesce_rollups,
    merge_rollups,
)
from tether.store.errors import StoreError

_GENESIS = (0, "0" * 64)
#: Lease states that mean the credential is dead (the dashboard counts them per hour).
_ENDED = (LeaseState.REVOKED, LeaseState.EXPIRED)
#: Dashboard sessions are kept this long past their expiry, then removed.
_SESSION_KEPT = dt.timedelta(days=1)


def _seq(record: AuditRecord) -> int:
    return record.seq


class _State:
    def __init__(self) -> None:
        self.meta: dict[str, bytes] = {}
        self.sealed: dict[str, SealedRecord] = {}
        self.objects: dict[tuple[str, str], Spec] = {}
        self.identities: dict[str, Spec] = {}
        self.audit: list[AuditRecord] = []
        self.tokens: dict[str, ApiTokenRecord] = {}
        #: Dashboard sessions: id → (token id, expires at, ended at).
        self.web_sessions: dict[str, tuple[str, dt.datetime, dt.datetime | None]] = {}
        self.tasks: dict[str, Task] = {}
        self.leases: dict[str, Lease] = {}
        self.lease_by_hash: dict[str, str] = {}
        self.jtis: dict[tuple[str, str], dt.datetime] = {}
        self.join_tokens: dict[str, JoinTokenRecord] = {}
        self.events: dict[int, ClusterEvent] = {}
        self.event_head: dict[str, int] = {"seq": 0}
        #: name -> (holder, term, expires_at in seconds since the epoch)
        self.leadership: dict[str, tuple[str, int, float]] = {}
        #: identity id -> (day, credential, entitlement) -> rollup
        self.usage: dict[str, dict[tuple[dt.date, str, str], UsageRollup]] = {}
        #: type -> id -> record
        self.govern: dict[str, dict[str, GovernRecord]] = {}
        #: (key, version) -> counters (tether.keys)
        self.key_usage: dict[tuple[str, int], KeyUsageCount] = {}


class _MemoryTx:
    """Writes go straight to the shared state and are undone on rollback."""

    def __init__(self, state: _State, writable: bool) -> None:
        self._s = state
        self._writable = writable
        self.undo: list[Callable[[], object]] = []
        self.after_commit: list[Callable[[], None]] = []

    def on_commit(self, callback: Callable[[], None]) -> None:
        self.after_commit.append(callback)

    def _set(self, table: dict[object, object], key: object, value: object) -> None:
        if not self._writable:
            raise StoreError("write in a read-only transaction")
        missing = object()
        old = table.get(key, missing)
        table[key] = value
        if old is missing:
            self.undo.append(lambda: table.pop(key, None))
        else:
            self.undo.append(lambda: table.__setitem__(key, old))

    def _delete(self, table: dict[object, object], key: object) -> None:
        if key in table:
            old = table.pop(key)
            self.undo.append(lambda: table.__setitem__(key, old))

    def get_meta(self, key: str) -> bytes | None:
        return self._s.meta.get(key)

    def put_meta(self, key: str, value: bytes) -> None:
        self._set(self._s.meta, key, value)  # type: ignore[arg-type]

    def get_sealed(self, record_id: str) -> SealedRecord | None:
        return self._s.sealed.get(record_id)

    def put_sealed(self, record: SealedRecord) -> None:
        self._set(self._s.sealed, record.id, record)  # type: ignore[arg-type]

    def sealed_below_term(self, term: int, limit: int) -> list[SealedRecord]:
        found = sorted((r for r in self._s.sealed.values() if r.term < term), key=lambda r: r.id)
        return found[:limit]

    def estate_objects(self, type_: str) -> dict[str, Spec]:
        return {k[1]: copy.deepcopy(v) for k, v in self._s.objects.items() if k[0] == type_}

    def put_estate_object(self, type_: str, object_id: str, spec: Spec) -> None:
        self._set(self._s.objects, (type_, object_id), copy.deepcopy(spec))  # type: ignore[arg-type]

    def delete_estate_object(self, type_: str, object_id: str) -> None:
        self._delete(self._s.objects, (type_, object_id))  # type: ignore[arg-type]

    def identity_specs(self) -> dict[str, Spec]:
        return copy.deepcopy(self._s.identities)

    def get_identity(self, identity_id: str) -> Spec | None:
        spec = self._s.identities.get(identity_id)
        return None if spec is None else copy.deepcopy(spec)

    def put_identity(self, spec: Spec) -> None:
        self._set(self._s.identities, spec["id"], copy.deepcopy(spec))  # type: ignore[arg-type]

    def list_identities(self, where: IdentityFilter) -> list[Spec]:
        out = []
        for identity_id in sorted(self._s.identities):
            spec = self._s.identities[identity_id]
            if where.after_id is not None and identity_id <= where.after_id:
                continue
            if where.kind is not None and spec["kind"] != where.kind:
                continue
            if where.owner_id is not None and spec["owner"] != where.owner_id:
                continue
            if where.owner_in is not None and spec["owner"] not in where.owner_in:
                continue
            if where.environment is not None and spec["environment"] != where.environment:
                continue
            if where.status is not None and spec.get("status", "active") != where.status:
                continue
            out.append(copy.deepcopy(spec))
            if len(out) >= where.limit:
                break
        return out

    def audit_head(self) -> tuple[int, str]:
        if not self._s.audit:
            return _GENESIS
        last = self._s.audit[-1]
        return last.seq, last.hash

    def append_audit(self, records: Sequence[AuditRecord]) -> None:
        if not self._writable:
            raise StoreError("write in a read-only transaction")
        before = len(self._s.audit)
        self._s.audit.extend(records)
        self.undo.append(lambda: self._s.audit.__delitem__(slice(before, None)))

    def list_audit(
        self,
        after_seq: int,
        limit: int,
        identity_id: str | None = None,
        action_prefix: str | None = None,
    ) -> list[AuditRecord]:
        return self.search_audit(AuditFilter.listing(after_seq, limit, identity_id, action_prefix))

    def search_audit(self, where: AuditFilter) -> list[AuditRecord]:
        log = self._s.audit
        # Kept in seq order: the seq bounds are a slice, the rest is a scan that stops
        # at the limit.
        lo = 0 if where.after_seq is None else bisect.bisect_right(log, where.after_seq, key=_seq)
        hi = len(log)
        if where.before_seq is not None:
            hi = bisect.bisect_left(log, where.before_seq, key=_seq)
        span = range(hi - 1, lo - 1, -1) if where.newest_first else range(lo, hi)
        out: list[AuditRecord] = []
        for i in span:
            if len(out) >= where.limit:
                break
            if where.matches(log[i]):
                out.append(log[i])
        return out

    # -- tasks --
    def put_task(self, task: Task) -> None:
        self._set(self._s.tasks, task.id, task)  # type: ignore[arg-type]

    def get_task(self, task_id: str) -> Task | None:
        return self._s.tasks.get(task_id)

    def active_task_for_run(self, identity_id: str, run_key: str) -> Task | None:
        return next(
            (
                t
                for t in self._s.tasks.values()
                if t.identity_id == identity_id
                and t.run_key == run_key
                and t.status is TaskStatus.ACTIVE
            ),
            None,
        )

    def list_tasks(self, where: TaskFilter) -> list[Task]:
        out = []
        owners = None
        if where.owner_in is not None:
            owners = {
                i for i, spec in self._s.identities.items() if spec["owner"] in where.owner_in
            }
        for task_id in sorted(self._s.tasks):
            task = self._s.tasks[task_id]
            if where.after_id is not None and task_id <= where.after_id:
                continue
            if where.identity_id is not None and task.identity_id != where.identity_id:
                continue
            if where.status is not None and task.status.value != where.status:
                continue
            if where.agent_runs and task.run is None:
                continue
            if owners is not None and task.identity_id not in owners:
                continue
            out.append(task)
            if len(out) >= where.limit:
                break
        return out

    def tasks_due(self, now: dt.datetime, limit: int) -> list[Task]:
        due = [
            t for t in self._s.tasks.values() if t.status is TaskStatus.ACTIVE and t.ends_at <= now
        ]
        return sorted(due, key=lambda t: t.ends_at)[:limit]

    # -- leases --
    def insert_leases(self, leases: Sequence[Lease]) -> None:
        for lease in leases:
            if lease.id in self._s.leases:
                raise StoreError("duplicate lease id")
            if lease.token_hash is not None and lease.token_hash in self._s.lease_by_hash:
                raise StoreError("duplicate token hash")
        for lease in leases:
            self._set(self._s.leases, lease.id, lease)  # type: ignore[arg-type]
            if lease.token_hash is not None:
                self._set(self._s.lease_by_hash, lease.token_hash, lease.id)  # type: ignore[arg-type]

    def get_lease(self, lease_id: str) -> Lease | None:
        return self._s.leases.get(lease_id)

    def lease_by_token_hash(self, token_hash: str) -> Lease | None:
        lease_id = self._s.lease_by_hash.get(token_hash)
        return None if lease_id is None else self._s.leases.get(lease_id)

    def put_lease(self, lease: Lease) -> None:
        if lease.id not in self._s.leases:
            raise StoreError("no such lease")
        if lease.token_hash is not None:
            holder = self._s.lease_by_hash.get(lease.token_hash)
            if holder is not None and holder != lease.id:
                raise StoreError("duplicate token hash")
            self._set(self._s.lease_by_hash, lease.token_hash, lease.id)  # type: ignore[arg-type]
        self._set(self._s.leases, lease.id, lease)  # type: ignore[arg-type]

    def end_leases(
        self, lease_ids: Sequence[str], state: LeaseState, at: dt.datetime, reason: str
    ) -> list[Lease]:
        moved = []
        for lease_id in lease_ids:
            lease = self._s.leases.get(lease_id)
            if lease is None or lease.state not in (
                LeaseState.PENDING,
                LeaseState.ACTIVE,
                LeaseState.REVOKING,
            ):
                continue
            if lease.state is LeaseState.REVOKING and state is not LeaseState.REVOKED:
                continue
            ended = replace(lease, state=state, ended_at=at, end_reason=lease.end_reason or reason)
            if state is LeaseState.REVOKING:
                ended = replace(ended, ended_at=None, next_attempt_at=at)
            self._set(self._s.leases, lease_id, ended)  # type: ignore[arg-type]
            moved.append(ended)
        return moved

    def find_leases(self, where: LeaseFilter) -> list[Lease]:
        out = []
        parents = None if where.parent_ids is None else set(where.parent_ids)
        for lease_id in sorted(self._s.leases):
            lease = self._s.leases[lease_id]
            if where.after_id is not None and lease_id <= where.after_id:
                continue
            if lease.state not in where.states:
                continue
            if where.task_id is not None and lease.task_id != where.task_id:
                continue
            if where.identity_id is not None and lease.identity_id != where.identity_id:
                continue
            if where.identity_ids is not None and lease.identity_id not in where.identity_ids:
                continue
            if where.suspect is not None and not where.suspect.holds(lease):
                continue
            if where.owner_id is not None and lease.owner_id != where.owner_id:
                continue
            if where.provider is not None and lease.provider != where.provider:
                continue
            if parents is not None and lease.parent_id not in parents:
                continue
            out.append(lease)
            if len(out) >= where.limit:
                break
        return out

    def leases_due(self, now: dt.datetime, limit: int) -> list[Lease]:
        due = [
            lease
            for lease in self._s.leases.values()
            if lease.state is LeaseState.ACTIVE and lease.expires_at <= now
        ]
        return sorted(due, key=lambda lease: lease.expires_at)[:limit]

    def leases_to_retry(self, now: dt.datetime, limit: int) -> list[Lease]:
        due = [
            lease
            for lease in self._s.leases.values()
            if lease.state is LeaseState.REVOKING
            and (lease.next_attempt_at is None or lease.next_attempt_at <= now)
        ]
        return sorted(due, key=lambda lease: lease.id)[:limit]

    def live_lease_ids(self, lease_ids: Sequence[str]) -> set[str]:
        return {i for i in lease_ids if i in self._s.leases and self._s.leases[i].state.live}

    def stale_pending(self, before: dt.datetime, limit: int) -> list[Lease]:
        stale = [
            lease
            for lease in self._s.leases.values()
            if lease.state is LeaseState.PENDING and lease.issued_at < before
        ]
        return sorted(stale, key=lambda lease: lease.issued_at)[:limit]

    def count_leases(self, state: LeaseState) -> int:
        return sum(1 for lease in self._s.leases.values() if lease.state is state)

    def lease_activity(self, since: dt.datetime) -> list[tuple[dt.datetime, int, int]]:
        hours: dict[dt.datetime, list[int]] = {}
        for lease in self._s.leases.values():
            ended = lease.ended_at if lease.state in _ENDED else None
            for slot, at in ((0, lease.issued_at), (1, ended)):
                if at is not None and at >= since:
                    hour = at.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
                    hours.setdefault(hour, [0, 0])[slot] += 1
        return [(hour, n[0], n[1]) for hour, n in sorted(hours.items())]

    def unjustified_identities(
        self,
        now: dt.datetime,
        ended_vendor_ids: Sequence[str],
        limit: int,
        after_id: str | None = None,
        ended_owner_ids: Sequence[str] = (),
    ) -> list[Spec]:
        # Held placements per identity: a lease whose placement differs from its
        # identity's current one makes the identity a candidate.
        held: dict[str, set[str]] = {}
        for lease in self._s.leases.values():
            if lease.state.live:
                keys = held.setdefault(lease.identity_id, set())
                if lease.placement is not None:
                    keys.add(lease.placement.key)
        out = []
        for identity_id in sorted(held):
            if after_id is not None and identity_id <= after_id:
                continue
            spec = self._s.identities.get(identity_id)
            if spec is not None and (
                self._ended(spec, now, ended_vendor_ids)
                or spec["owner"] in ended_owner_ids
                or held[identity_id] - {Placement.of_spec(spec).key}
            ):
                out.append(copy.deepcopy(spec))
                if len(out) >= limit:
                    break
        return out

    def _ended(self, spec: Spec, now: dt.datetime, ended_vendor_ids: Sequence[str]) -> bool:
        approval = spec.get("approval")
        expires = spec.get("expires")
        vendor = spec.get("vendor")
        return (
            spec.get("status", "active") != "active"
            or (approval is not None and parse_time(approval["expires"]) <= now)
            or (expires is not None and parse_time(expires) <= now)
            or vendor in ended_vendor_ids
            or (vendor is not None and ("vendor", vendor) not in self._s.objects)
            or ("owner", spec["owner"]) not in self._s.objects
        )

    # -- attestation replay and join tokens --
    def remember_jti(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool:
        if (issuer, jti) in self._s.jtis:
            return False
        self._set(self._s.jtis, (issuer, jti), expires_at)  # type: ignore[arg-type]
        return True

    def forget_jti_before(self, now: dt.datetime) -> int:
        old = [k for k, exp in self._s.jtis.items() if exp <= now]
        for key in old:
            self._delete(self._s.jtis, key)  # type: ignore[arg-type]
        return len(old)

    def put_join_token(self, record: JoinTokenRecord) -> None:
        self._set(self._s.join_tokens, record.token_hash, record)  # type: ignore[arg-type]

    def consume_join_token(self, token_hash: str, now: dt.datetime) -> JoinTokenRecord | None:
        record = self._s.join_tokens.get(token_hash)
        if record is None or record.used_at is not None or record.expires_at <= now:
            return None
        used = replace(record, used_at=now)
        self._set(self._s.join_tokens, token_hash, used)  # type: ignore[arg-type]
        return used

    def join_token_by_hash(self, token_hash: str) -> JoinTokenRecord | None:
        return self._s.join_tokens.get(token_hash)

    def put_api_token(self, record: ApiTokenRecord) -> None:
        if any(
            t.token_hash == record.token_hash and t.id != record.id for t in self._s.tokens.values()
        ):
            raise StoreError("duplicate token hash")
        self._set(self._s.tokens, record.id, record)  # type: ignore[arg-type]

    def api_token_by_hash(self, token_hash: str) -> ApiTokenRecord | None:
        return next((t for t in self._s.tokens.values() if t.token_hash == token_hash), None)

    def list_api_tokens(self) -> list[ApiTokenRecord]:
        return sorted(self._s.tokens.values(), key=lambda t: t.created_at)

    def revoke_api_token(self, token_id: str, at: dt.datetime) -> bool:
        record = self._s.tokens.get(token_id)
        if record is None or record.revoked_at is not None:
            return False
        self._set(self._s.tokens, token_id, replace(record, revoked_at=at))  # type: ignore[arg-type]
        return True

    # -- dashboard sessions --
    def put_web_session(self, session_id: str, token_id: str, expires_at: dt.datetime) -> None:
        for old, (_, expires, _ended) in list(self._s.web_sessions.items()):
            if expires < expires_at - _SESSION_KEPT:
                self._delete(self._s.web_sessions, old)  # type: ignore[arg-type]
        self._set(self._s.web_sessions, session_id, (token_id, expires_at, None))  # type: ignore[arg-type]

    def web_session_live(self, session_id: str, now: dt.datetime) -> bool:
        held = self._s.web_sessions.get(session_id)
        return held is not None and held[2] is None and held[1] > now

    def end_web_session(self, session_id: str, at: dt.datetime) -> bool:
        held = self._s.web_sessions.get(session_id)
        if held is None or held[2] is not None or held[1] <= at:
            return False
        self._set(self._s.web_sessions, session_id, (held[0], held[1], at))  # type: ignore[arg-type]
        return True

    # -- governance --
    def merge_usage(self, rollups: Sequence[UsageRollup]) -> None:
        if not self._writable:
            raise StoreError("write in a read-only transaction")
        for rollup in coalesce_rollups(rollups):
            days = self._s.usage.setdefault(rollup.identity_id, {})
            key = (rollup.day, rollup.credential, rollup.entitlement)
            seen = days.get(key)
            self._set(days, key, rollup if seen is None else merge_rollups(seen, rollup))  # type: ignore[arg-type]

    def usage_for(self, identity_ids: Sequence[str], since: dt.date) -> list[UsageRollup]:
        out: list[UsageRollup] = []
        for identity_id in sorted(set(identity_ids)):
            days = self._s.usage.get(identity_id, {})
            out.extend(days[k] for k in sorted(days) if k[0] >= since)
        return out

    def prune_usage(self, before: dt.date) -> int:
        pruned = 0
        for days in self._s.usage.values():
            for key in [k for k in days if k[0] < before]:
                self._delete(days, key)  # type: ignore[arg-type]
                pruned += 1
        return pruned

    def put_govern(self, records: Sequence[GovernRecord]) -> None:
        if not self._writable:
            raise StoreError("write in a read-only transaction")
        for record in records:
            # A copy of the spec: the caller's dict may change after the write.
            stored = replace(
                record,
                spec=copy.deepcopy(dict(record.spec)),
                updated_at=record.updated_at.astimezone(dt.UTC),  # as the SQL store reads it
            )
            self._set(self._s.govern.setdefault(record.type, {}), record.id, stored)  # type: ignore[arg-type]

    def get_govern(self, type_: str, record_id: str) -> GovernRecord | None:
        record = self._s.govern.get(type_, {}).get(record_id)
        return None if record is None else replace(record, spec=copy.deepcopy(record.spec))

    def list_govern(self, where: GovernFilter) -> list[GovernRecord]:
        records = self._s.govern.get(where.type, {})
        identities = None if where.identity_ids is None else set(where.identity_ids)
        owners = None if where.owner_in is None else set(where.owner_in)
        states = None if where.states is None else set(where.states)
        out = []
        for record_id in sorted(records):
            if where.after_id is not None and record_id <= where.after_id:
                continue
            r = records[record_id]
            if (
                (where.group_id is not None and r.group_id != where.group_id)
                or (where.identity_id is not None and r.identity_id != where.identity_id)
                or (identities is not None and r.identity_id not in identities)
                or (where.owner_id is not None and r.owner_id != where.owner_id)
                or (owners is not None and r.owner_id not in owners)
                or (states is not None and r.state not in states)
            ):
                continue
            out.append(replace(r, spec=copy.deepcopy(r.spec)))
            if len(out) >= where.limit:
                break
        return out

    def delete_govern(self, type_: str, record_ids: Sequence[str]) -> None:
        records = self._s.govern.get(type_, {})
        for record_id in record_ids:
            self._delete(records, record_id)  # type: ignore[arg-type]

    def govern_counts(self, type_: str) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for r in self._s.govern.get(type_, {}).values():
            counts[(r.group_id, r.state)] = counts.get((r.group_id, r.state), 0) + 1
        return counts

    # -- confidentiality keys --
    def reserve_key_usage(self, key: str, version: int, n: int) -> int:
        if n < 1:
            raise StoreError("a reservation is of one encryption or more")
        seen = self._s.key_usage.get((key, version)) or KeyUsageCount(key, version, 0, 0)
        moved = replace(seen, encryptions=seen.encryptions + n)
        self._set(self._s.key_usage, (key, version), moved)  # type: ignore[arg-type]
        return moved.encryptions

    def add_key_decryptions(self, counts: Sequence[tuple[str, int, int]], at: dt.datetime) -> None:
        if not self._writable:
            raise StoreError("write in a read-only transaction")
        at = at.astimezone(dt.UTC)
        for key, version, n in sorted(counts):
            seen = self._s.key_usage.get((key, version)) or KeyUsageCount(key, version, 0, 0)
            last = seen.last_decrypted_at
            moved = replace(
                seen,
                decryptions=seen.decryptions + n,
                last_decrypted_at=at if last is None or last < at else last,
            )
            self._set(self._s.key_usage, (key, version), moved)  # type: ignore[arg-type]

    def key_usage(self, key: str) -> list[KeyUsageCount]:
        return [c for (k, _v), c in sorted(self._s.key_usage.items()) if k == key]

    def delete_key_usage(self, key: str, versions: Sequence[int] | None = None) -> int:
        if not self._writable:
            raise StoreError("write in a read-only transaction")
        wanted = None if versions is None else set(versions)
        gone = [
            (k, v) for (k, v) in self._s.key_usage if k == key and (wanted is None or v in wanted)
        ]
        for item in gone:
            self._delete(self._s.key_usage, item)  # type: ignore[arg-type]
        return len(gone)

    def delete_sealed(self, record_ids: Sequence[str]) -> int:
        if not self._writable:
            raise StoreError("write in a read-only transaction")
        gone = [i for i in dict.fromkeys(record_ids) if i in self._s.sealed]
        for record_id in gone:
            self._delete(self._s.sealed, record_id)  # type: ignore[arg-type]
        return len(gone)

    # -- cluster --
    def publish(self, kind: str, data: Mapping[str, object]) -> None:
        seq = self._s.event_head["seq"] + 1
        self._set(self._s.event_head, "seq", seq)  # type: ignore[arg-type]
        event = ClusterEvent(seq, kind, copy.deepcopy(dict(data)), utcnow())
        self._set(self._s.events, seq, event)  # type: ignore[arg-type]

    def events_head(self) -> int:
        return self._s.event_head["seq"]

    def events_after(self, seq: int, limit: int) -> list[ClusterEvent]:
        return [self._s.events[k] for k in sorted(self._s.events) if k > seq][:limit]

    def prune_events(self, before: dt.datetime) -> int:
        old = [k for k, e in self._s.events.items() if e.created_at < before]
        for key in old:
            self._delete(self._s.events, key)  # type: ignore[arg-type]
        return len(old)

    def claim_leadership(self, name: str, holder: str, ttl: float) -> int | None:
        now = time.time()
        current, term, expires_at = self._s.leadership.get(name, ("", 0, 0.0))
        if current != holder and expires_at >= now:
            return None
        term = term if current == holder else term + 1
        self._set(self._s.leadership, name, (holder, term, now + ttl))  # type: ignore[arg-type]
        return term

    def release_leadership(self, name: str, holder: str) -> None:
        current, term, _ = self._s.leadership.get(name, ("", 0, 0.0))
        if current == holder:
            self._set(self._s.leadership, name, (holder, term, 0.0))  # type: ignore[arg-type]

    def holds_leadership(self, name: str, holder: str, term: int) -> bool:
        current, current_term, expires_at = self._s.leadership.get(name, ("", 0, 0.0))
        return current == holder and current_term == term and expires_at > time.time()

    def claim_retries(self, now: dt.datetime, until: dt.datetime, limit: int) -> list[Lease]:
        claimed = [
            replace(lease, next_attempt_at=until) for lease in self.leases_to_retry(now, limit)
        ]
        for lease in claimed:
            self._set(self._s.leases, lease.id, lease)  # type: ignore[arg-type]
        return claimed


class MemoryStore:
    single_process = True

    def __init__(self) -> None:
        self._state = _State()
        self._lock = threading.RLock()
        self._group = GroupCommit(self.transaction)

    def migrate(self) -> None:
        return None

    @contextmanager
    def transaction(self) -> Iterator[_MemoryTx]:
        with self._lock:
            tx = _MemoryTx(self._state, writable=True)
            try:
                yield tx
            except BaseException:
                for undo in reversed(tx.undo):
                    undo()
                raise
        for callback in tx.after_commit:
            callback()

    @contextmanager
    def read(self) -> Iterator[_MemoryTx]:
        with self._lock:
            yield _MemoryTx(self._state, writable=False)

    def commit_together(self, work: Callable[[Tx], T]) -> T:
        return self._group.run(work)

    def iter_audit(self, batch: int = 20_000) -> Iterator[AuditRecord]:
        with self._lock:
            records = list(self._state.audit)
        yield from records

    def close(self) -> None:
        return None

    def wake_ups(self) -> WakeUps:
        return PollOnly()
