from __future__ import annotations

import datetime as dt
import functools
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tether.model import AuditRecord, Lease, LeaseState, Task

Spec = dict[str, Any]
T = TypeVar("T")

#: The kinds of estate object kept in the generic object table (identities have their own).
ESTATE_OBJECT_TYPES = ("owner", "vendor", "issuer", "profile", "kind", "policy")


@dataclass(frozen=True, slots=True)
class SealedRecord:
    """Secret material as the store sees it: ciphertext under a keyring term."""

    id: str
    purpose: str
    term: int
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    """An API token as stored: only its keyed hash, never the token."""

    id: str
    token_hash: str
    name: str
    roles: tuple[str, ...]
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class IdentityFilter:
    kind: str | None = None
    owner_id: str | None = None
    environment: str | None = None
    status: str | None = None
    #: Restrict to these owners (an `owner:<id>` caller sees only its own identities).
    owner_in: tuple[str, ...] | None = None
    after_id: str | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class JoinTokenRecord:
    """A one-time join token for a host that cannot present OIDC: stored as a keyed hash."""

    id: str
    token_hash: str
    identity_id: str
    created_at: dt.datetime
    expires_at: dt.datetime
    created_by: str
    used_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class SuspectLeases:
    """The leases a governance rule can flag: those revoking, those issued at or before
    `issued_before`, and those whose delegation chain has at least `chain` hops. Few
    among many, so a full evaluation need not read every live lease."""

    issued_before: dt.datetime
    chain: int

    def holds(self, lease: Lease) -> bool:
        return (
            lease.state is LeaseState.REVOKING
            or lease.issued_at <= self.issued_before
            or len(lease.delegation) >= self.chain
        )


@dataclass(frozen=True, slots=True)
class LeaseFilter:
    """Which leases: every set field narrows."""

    task_id: str | None = None
    identity_id: str | None = None
    #: Leases of any of these identities.
    identity_ids: tuple[str, ...] | None = None
    owner_id: str | None = None
    parent_ids: tuple[str, ...] | None = None
    states: tuple[LeaseState, ...] = (LeaseState.PENDING, LeaseState.ACTIVE)
    #: Leases of this provider only (the SVIDs a CRL lists).
    provider: str | None = None
    suspect: SuspectLeases | None = None
    after_id: str | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit entries: every set field narrows. `action` is exact, or a prefix when it
    ends with "." or "*" ("alert." and "alert.*" both mean every `alert.` action). `since`
    is inclusive and `until` exclusive. Ordered by seq, newest first unless `newest_first`
    is False; a page continues with `before_seq` (older) or `after_seq` (newer)."""

    actor: str | None = None
    identity_id: str | None = None
    action: str | None = None
    result: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    before_seq: int | None = None
    after_seq: int | None = None
    newest_first: bool = True
    limit: int = 100

    @classmethod
    def listing(
        cls, after_seq: int, limit: int, identity_id: str | None, action_prefix: str | None
    ) -> AuditFilter:
        """What `Tx.list_audit` reads: oldest first after `after_seq`."""
        action = None if action_prefix is None else action_prefix + "*"
        return cls(
            identity_id=identity_id,
            action=action,
            after_seq=after_seq,
            newest_first=False,
            limit=limit,
        )

    @property
    def action_prefix(self) -> str | None:
        """The prefix `action` asks for, or None when it names one action (or none)."""
        if self.action is None or not self.action.endswith((".", "*")):
            return None
        return self.action.removesuffix("*")

    def matches(self, r: AuditRecord) -> bool:
        """Whether `r` is one of the entries asked for (the order and limit aside)."""
        prefix = self.action_prefix
        return (
            (self.actor is None or r.actor == self.actor)
            and (self.identity_id is None or r.identity_id == self.identity_id)
            and (
                self.action is None
                or (r.action.startswith(prefix) if prefix is not None else r.action == self.action)
            )
            and (self.result is None or r.result == self.result)
            and (self.since is None or r.ts >= self.since)
            and (self.until is None or r.ts < self.until)
            and (self.before_seq is None or r.seq < self.before_seq)
            and (self.after_seq is None or r.seq > self.after_seq)
        )


@dataclass(frozen=True, slots=True)
class TaskFilter:
    identity_id: str | None = None
    owner_in: tuple[str, ...] | None = None
    status: str | None = None
    after_id: str | None = None
    limit: int = 1000
    #: Only agent runs (tasks that declare a run).
    agent_runs: bool = False


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    """A change other nodes act on (tether.cluster's feed), numbered in commit order."""

    seq: int
    kind: str
    data: Mapping[str, Any]
    created_at: dt.datetime


#: Distinct values kept per facet per rollup: a day of use from a million sources must
#: not grow a row without bound. Past the cap, values are dropped (the smallest are kept,
#: so merging in any order keeps the same ones).
USAGE_DISTINCT_CAP = 32

#: The key a rollup is merged by: (identity_id, day, credential, entitlement).
UsageKey = tuple[str, dt.date, str, str]


@dataclass(frozen=True, slots=True)
class UsageRollup:
    """Use of one identity (optionally one credential, one entitlement) on one UTC day."""

    identity_id: str
    day: dt.date
    first_seen: dt.datetime
    last_seen: dt.datetime
    #: A credential fingerprint or lease id; "" when not known.
    credential: str = ""
    #: A profile id; "" when not known.
    entitlement: str = ""
    count: int = 1
    #: Distinct values seen per facet ("source", "user_agent", "scope", "subject",
    #: "action", "resource", "application", "environment", ...), each sorted, capped at
    #: USAGE_DISTINCT_CAP values. A facet with no value is left out.
    facets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def key(self) -> UsageKey:
        return (self.identity_id, self.day, self.credential, self.entitlement)


def merge_facets(
    a: Mapping[str, Sequence[str]], b: Mapping[str, Sequence[str]]
) -> dict[str, tuple[str, ...]]:
    """The union of two facet maps, each facet sorted and capped; empty facets left out."""
    out: dict[str, tuple[str, ...]] = {}
    for name in sorted({*a, *b}):
        values = sorted({*a.get(name, ()), *b.get(name, ())})[:USAGE_DISTINCT_CAP]
        if values:
            out[name] = tuple(values)
    return out


def merge_rollups(a: UsageRollup, b: UsageRollup) -> UsageRollup:
    """Same key (identity_id, day, credential, entitlement): counts add, first is the min,
    last the max, facets union (sorted, capped)."""
    if a.key != b.key:
        raise ValueError("rollups of different keys do not merge")
    return UsageRollup(
        identity_id=a.identity_id,
        day=a.day,
        first_seen=min(a.first_seen, b.first_seen),
        last_seen=max(a.last_seen, b.last_seen),
        credential=a.credential,
        entitlement=a.entitlement,
        count=a.count + b.count,
        facets=merge_facets(a.facets, b.facets),
    )


def coalesce_rollups(rollups: Sequence[UsageRollup]) -> list[UsageRollup]:
    """One rollup per key (the batch's own repeats merged), facets normalized, in key
    order: the order every store writes in, so concurrent writers lock rows alike."""
    by_key: dict[UsageKey, UsageRollup] = {}
    for rollup in rollups:
        key = rollup.key
        seen = by_key.get(key)
        by_key[key] = merge_rollups(seen, rollup) if seen is not None else rollup
    out = []
    for key in sorted(by_key):
        rollup = by_key[key]
        if rollup.facets:
            facets = _normal_facets(rollup.facets)
            if facets != rollup.facets:
                rollup = UsageRollup(
                    rollup.identity_id,
                    rollup.day,
                    rollup.first_seen,
                    rollup.last_seen,
                    rollup.credential,
                    rollup.entitlement,
                    rollup.count,
                    facets,
                )
        out.append(rollup)
    return out


def _normal_facets(facets: Mapping[str, Sequence[str]]) -> Mapping[str, tuple[str, ...]]:
    try:
        return _normal_items(tuple(facets.items()))
    except TypeError:  # values given as lists: not hashable, so not cached
        return merge_facets(facets, {})


@functools.lru_cache(maxsize=8192)
def _normal_items(items: tuple[tuple[str, Sequence[str]], ...]) -> Mapping[str, tuple[str, ...]]:
    # A bulk load repeats a few facet sets (the same sources and scopes, identity after
    # identity): each is normalized once, and the rollups share the (read-only) result.
    return merge_facets(dict(items), {})


#: The kinds of governance record.
GOVERN_TYPES = ("finding", "campaign", "review_item", "exception", "alert")


@dataclass(frozen=True, slots=True)
class GovernRecord:
    """A governance object: type 'finding' | 'campaign' | 'review_item' | 'exception' | 'alert'."""

    type: str
    id: str
    #: finding/exception: the rule id; review_item: the campaign id; alert: the sink id;
    #: campaign: "".
    group_id: str
    #: finding: open|resolved|excepted; alert: pending|delivered; ...
    state: str
    #: JSON-serialisable.
    spec: Mapping[str, Any]
    updated_at: dt.datetime
    identity_id: str | None = None
    owner_id: str | None = None


@dataclass(frozen=True, slots=True)
class GovernFilter:
    """Which records of one type: every set field narrows. Pages in id order."""

    type: str
    group_id: str | None = None
    identity_id: str | None = None
    identity_ids: tuple[str, ...] | None = None
    owner_id: str | None = None
    owner_in: tuple[str, ...] | None = None
    states: tuple[str, ...] | None = None
    after_id: str | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class KeyUsageCount:
    """Use of one version of a confidentiality key (tether.keys), across every process.

    `encryptions` counts what was *reserved*: a process takes a block of encryptions
    before it makes any of them, so the count may run ahead of the encryptions made (a
    process that stops leaves the rest of its block counted) but never behind them.
    """

    key: str
    version: int
    encryptions: int
    decryptions: int
    last_decrypted_at: dt.datetime | None = None


class WakeUps(Protocol):
    """What the change feed waits on between polls: PostgreSQL's NOTIFY, or a plain
    timeout where there is none (SQLite, memory)."""

    def wait(self, timeout: float) -> None:
        """Return when an event may have been committed, or after `timeout` seconds."""

    def close(self) -> None: ...


class PollOnly:
    """WakeUps with none to give (SQLite, memory): the feed polls. `close` ends a wait."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def wait(self, timeout: float) -> None:
        self._closed.wait(timeout)

    def close(self) -> None:
        self._closed.set()


class Tx(Protocol):
    """One transaction. Nothing is visible to others until the transaction commits."""

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Run `callback` once the transaction has committed; never after a rollback."""

    # -- barrier metadata (seal configuration, the sealed keyring) --
    def get_meta(self, key: str) -> bytes | None: ...
    def put_meta(self, key: str, value: bytes) -> None: ...

    # -- secret material, encrypted by the barrier before it gets here --
    def get_sealed(self, record_id: str) -> SealedRecord | None: ...
    def put_sealed(self, record: SealedRecord) -> None: ...
    def sealed_below_term(self, term: int, limit: int) -> list[SealedRecord]: ...

    # -- estate objects other than identities --
    def estate_objects(self, type_: str) -> dict[str, Spec]: ...
    def put_estate_object(self, type_: str, object_id: str, spec: Spec) -> None: ...
    def delete_estate_object(self, type_: str, object_id: str) -> None: ...

    # -- identities --
    def identity_specs(self) -> dict[str, Spec]: ...
    def get_identity(self, identity_id: str) -> Spec | None: ...
    def put_identity(self, spec: Spec) -> None: ...
    def list_identities(self, where: IdentityFilter) -> list[Spec]: ...

    # -- audit log --
    def audit_head(self) -> tuple[int, str]: ...
    def append_audit(self, records: Sequence[AuditRecord]) -> None: ...
    def list_audit(
        self,
        after_seq: int,
        limit: int,
        identity_id: str | None = None,
        action_prefix: str | None = None,
    ) -> list[AuditRecord]: ...
    def search_audit(self, where: AuditFilter) -> list[AuditRecord]:
        """The entries `where` asks for, by seq (newest first unless it says otherwise),
        at most `where.limit` of them."""

    # -- tasks --
    def put_task(self, task: Task) -> None: ...
    def get_task(self, task_id: str) -> Task | None: ...
    def active_task_for_run(self, identity_id: str, run_key: str) -> Task | None: ...
    def list_tasks(self, where: TaskFilter) -> list[Task]: ...
    def tasks_due(self, now: dt.datetime, limit: int) -> list[Task]:
        """Active tasks past their deadline or their attestation's expiry."""

    # -- leases --
    def insert_leases(self, leases: Sequence[Lease]) -> None: ...
    def get_lease(self, lease_id: str) -> Lease | None: ...
    def lease_by_token_hash(self, token_hash: str) -> Lease | None: ...
    def put_lease(self, lease: Lease) -> None:
        """Replace the stored lease with the same id."""

    def end_leases(
        self, lease_ids: Sequence[str], state: LeaseState, at: dt.datetime, reason: str
    ) -> list[Lease]:
        """Move live leases to an end state; return the ones that moved (already ended: skipped)."""

    def find_leases(self, where: LeaseFilter) -> list[Lease]: ...
    def leases_due(self, now: dt.datetime, limit: int) -> list[Lease]:
        """Active leases whose expires_at has passed, oldest first."""

    def leases_to_retry(self, now: dt.datetime, limit: int) -> list[Lease]:
        """Leases stuck in `revoking` whose next attempt is due."""

    def count_leases(self, state: LeaseState) -> int: ...
    def lease_activity(self, since: dt.datetime) -> list[tuple[dt.datetime, int, int]]:
        """Per UTC hour from `since`: (hour, leases issued, leases that ended revoked or
        expired); hours with neither are left out. The dashboard's trend."""

    def live_lease_ids(self, lease_ids: Sequence[str]) -> set[str]:
        """Which of these leases are pending or active (the reconciler keeps their objects)."""

    def stale_pending(self, before: dt.datetime, limit: int) -> list[Lease]:
        """Leases still `pending` since before `before`: issuances a crash interrupted."""

    def unjustified_identities(
        self,
        now: dt.datetime,
        ended_vendor_ids: Sequence[str],
        limit: int,
        after_id: str | None = None,
        ended_owner_ids: Sequence[str] = (),
    ) -> list[Spec]:
        """A prefilter for the justification sweep: identities holding live leases that
        may no longer be justified (not active, approval or own expiry passed, vendor
        contract ended or vendor unknown, owner removed or in `ended_owner_ids` (departed,
        grace passed), or a live lease recorded for another placement than the
        identity's). A superset of what the rule refuses, never a decision: the caller
        puts each lease to tether.model's rule. In id order, after `after_id` (pages)."""

    # -- attestation replay and join tokens --
    def remember_jti(self, issuer: str, jti: str, expires_at: dt.datetime) -> bool:
        """Record a single-use token id; False if it was seen before."""

    def forget_jti_before(self, now: dt.datetime) -> int: ...
    def put_join_token(self, record: JoinTokenRecord) -> None: ...
    def consume_join_token(self, token_hash: str, now: dt.datetime) -> JoinTokenRecord | None:
        """Mark an unused, unexpired join token used and return it; None otherwise."""

    def join_token_by_hash(self, token_hash: str) -> JoinTokenRecord | None:
        """A join token, used or not (exposure matching)."""

    # -- API tokens --
    def put_api_token(self, record: ApiTokenRecord) -> None: ...
    def api_token_by_hash(self, token_hash: str) -> ApiTokenRecord | None: ...
    def list_api_tokens(self) -> list[ApiTokenRecord]: ...
    def revoke_api_token(self, token_id: str, at: dt.datetime) -> bool: ...

    # -- dashboard sessions (tether.web): by the hash of the session's nonce --
    def put_web_session(self, session_id: str, token_id: str, expires_at: dt.datetime) -> None:
        """Record a signed-in session; sessions expired a day ago are removed with it."""

    def web_session_live(self, session_id: str, now: dt.datetime) -> bool:
        """Whether the session was recorded, has not been ended and has not expired."""

    def end_web_session(self, session_id: str, at: dt.datetime) -> bool:
        """End a session (signing out); False when it was not live."""

    # -- governance: usage rollups and governance records (tether.govern) --
    def merge_usage(self, rollups: Sequence[UsageRollup]) -> None:
        """Add these to the stored rollups with the same key (merge_rollups), inserting
        new keys. Safe against concurrent writers (no count is lost); fast in bulk."""

    def usage_for(self, identity_ids: Sequence[str], since: dt.date) -> list[UsageRollup]:
        """Rollups of these identities with day >= since, ordered by identity_id, day,
        credential, entitlement."""

    def prune_usage(self, before: dt.date) -> int:
        """Forget rollups of days before `before`; how many."""

    def put_govern(self, records: Sequence[GovernRecord]) -> None:
        """Insert or replace, by (type, id)."""

    def get_govern(self, type_: str, record_id: str) -> GovernRecord | None: ...
    def list_govern(self, where: GovernFilter) -> list[GovernRecord]:
        """Ordered by id, after `where.after_id`, at most `where.limit`."""

    def delete_govern(self, type_: str, record_ids: Sequence[str]) -> None: ...
    def govern_counts(self, type_: str) -> dict[tuple[str, str], int]:
        """Counts of records of `type_` by (group_id, state): Prometheus gauges per rule."""

    # -- confidentiality keys (tether.keys): usage counters; material is sealed records --
    def reserve_key_usage(self, key: str, version: int, n: int) -> int:
        """Add `n` encryptions to the counter of (`key`, `version`), atomically (no two
        callers on any node get overlapping blocks), and return the new total: the caller
        owns encryptions total-n .. total-1."""

    def add_key_decryptions(self, counts: Sequence[tuple[str, int, int]], at: dt.datetime) -> None:
        """Add decryptions, one (key, version, n) per row, and note `at` as the versions'
        latest decryption (the later of it and the stored one)."""

    def key_usage(self, key: str) -> list[KeyUsageCount]:
        """Every counted version of `key`, in version order."""

    def delete_key_usage(self, key: str, versions: Sequence[int] | None = None) -> int:
        """Forget the counters of these versions of `key` (None: every version); how many."""

    def delete_sealed(self, record_ids: Sequence[str]) -> int:
        """Remove sealed records for good (a purged key's material); how many there were."""

    # -- cluster: the change feed and the leadership lease (tether.cluster) --
    def publish(self, kind: str, data: Mapping[str, Any]) -> None:
        """Record an event for every node, atomically with this transaction's changes.

        Takes the event counter's lock until commit (that is what keeps events in commit
        order): publish after the transaction's audit append. Lock order: leadership,
        audit head, event counter."""

    def events_head(self) -> int:
        """The newest event's seq (0 before the first)."""

    def events_after(self, seq: int, limit: int) -> list[ClusterEvent]:
        """Committed events after `seq`, in order."""

    def prune_events(self, before: dt.datetime) -> int:
        """Forget events created before `before`; how many."""

    def claim_leadership(self, name: str, holder: str, ttl: float) -> int | None:
        """Take or renew the lease `name` for `ttl` seconds of the database's clock: the
        term when `holder` holds it now (a new term if it was someone else's), None when
        another holder's lease has not expired."""

    def release_leadership(self, name: str, holder: str) -> None:
        """End `holder`'s lease now, so another may take over without waiting."""

    def holds_leadership(self, name: str, holder: str, term: int) -> bool:
        """Whether `holder` still holds `name` in `term` and its lease has not expired.
        On PostgreSQL the row stays share-locked until this transaction ends, so no one
        takes over while a fenced write is in flight."""

    def claim_retries(self, now: dt.datetime, until: dt.datetime, limit: int) -> list[Lease]:
        """Claim up to `limit` leases stuck in `revoking` whose next attempt is due: their
        next attempt moves to `until`, so no other runner retries them meanwhile (and a
        runner that dies leaves them due again at `until`, never lost)."""


class Store(Protocol):
    @property
    def single_process(self) -> bool:
        """True when no other process can write to this store (the in-memory one): this
        process's own commits are then every change there is."""

    def migrate(self) -> None:
        """Bring the schema to the newest version; safe to call on every start."""

    def transaction(self) -> AbstractContextManager[Tx]:
        """A read-write transaction. Writers are serialized; an exception rolls back."""

    def read(self) -> AbstractContextManager[Tx]:
        """A read-only transaction that does not wait for writers."""

    def commit_together(self, work: Callable[[Tx], T]) -> T:
        """Run `work` in a write transaction it may share with concurrent callers (group
        commit: one commit for all of them) and return what it returned, once committed.
        `work` may run twice (alone, when the shared transaction failed): it must only
        write to the transaction it is given."""

    def iter_audit(self, batch: int = 20_000) -> Iterator[AuditRecord]:
        """Every audit entry in sequence order, streamed in batches (memory stays flat)."""

    def close(self) -> None: ...

    def wake_ups(self) -> WakeUps:
        """A new waiter on committed events, for the change feed (close it when done)."""
