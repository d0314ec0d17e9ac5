from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from tether._internal.timeutil import format_time, utcnow
from tether.audit import AuditLog
from tether.cluster import publish_ended
from tether.errors import NotFoundError
from tether.model import (
    GOVERNANCE_ID,
    AuditEvent,
    GovernanceSettings,
    Identity,
    IdentityStatus,
    Lease,
    LeaseState,
    Owner,
    Task,
    TaskStatus,
    Unjustified,
    Vendor,
    justification_problems,
    suspended_owners,
)
from tether.providers import Provider, ProviderError
from tether.store import LeaseFilter, Store, Tx

log = logging.getLogger("tether.lease")

_PAGE = 5_000
_MAX_BACKOFF = dt.timedelta(minutes=5)
#: How long a claimed revocation retry is its runner's alone: far longer than one
#: target revocation takes, so a slow runner is not overtaken mid-revocation.
RETRY_CLAIM = dt.timedelta(seconds=30)


@dataclass(frozen=True, slots=True)
class RevokeTarget:
    """What to revoke. Exactly one of these is set (or `everything`, the kill switch)."""

    lease_id: str | None = None
    task_id: str | None = None
    identity_id: str | None = None
    owner_id: str | None = None
    everything: bool = False

    def filter(self) -> LeaseFilter | None:
        if self.task_id is not None:
            return LeaseFilter(task_id=self.task_id, limit=_PAGE)
        if self.identity_id is not None:
            return LeaseFilter(identity_id=self.identity_id, limit=_PAGE)
        if self.owner_id is not None:
            return LeaseFilter(owner_id=self.owner_id, limit=_PAGE)
        if self.everything:
            return LeaseFilter(limit=_PAGE)
        return None


def backoff(attempts: int) -> dt.timedelta:
    return min(dt.timedelta(seconds=2 ** min(attempts, 16)), _MAX_BACKOFF)


class LeaseService:
    """Ends leases: by revocation (cascading down the lease tree), expiry and justification."""

    def __init__(
        self,
        store: Store,
        audit: AuditLog,
        providers: Mapping[str, Provider] | Callable[[Lease], Provider],
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._store = store
        self._audit = audit
        if isinstance(providers, Mapping):
            by_name = providers
            self._resolve: Callable[[Lease], Provider] = lambda lease: by_name[lease.provider]
        else:
            self._resolve = providers
        self._clock = clock
        #: Called after any commit that ended leases (cache invalidation, wake-ups).
        self.on_ended: list[Callable[[Sequence[Lease]], None]] = []
        #: Called with the alert kind whenever an alert is raised (metrics).
        self.on_alert: list[Callable[[str], None]] = []

    # -- revocation --
    def _subtree(self, tx: Tx, roots: list[Lease]) -> list[Lease]:
        """The roots and every live lease derived from them, breadth first."""
        found = {lease.id: lease for lease in roots}
        frontier = [lease.id for lease in roots]
        while frontier:
            children: list[Lease] = []
            for start in range(0, len(frontier), _PAGE):
                chunk = tuple(frontier[start : start + _PAGE])
                children.extend(tx.find_leases(LeaseFilter(parent_ids=chunk, limit=10**9)))
            frontier = [c.id for c in children if c.id not in found]
            found.update((c.id, c) for c in children)
        return list(found.values())

    def _end(
        self,
        tx: Tx,
        leases: Sequence[Lease],
        state: LeaseState,
        reason: str,
        actor: str,
        trigger: Mapping[str, Any] | None = None,
    ) -> list[Lease]:
        """End `leases` in `tx`, audited per lease. External providers go through `revoking`.

        `trigger` names the lifecycle trigger that ended them (`{"kind": ..., "at": ...}`),
        recorded in each entry so the evidence report measures trigger-to-dead time."""
        now = self._clock()
        local = [lease.id for lease in leases if not self._provider(lease).external]
        external = [lease.id for lease in leases if self._provider(lease).external]
        ended = tx.end_leases(local, state, now, reason)
        if external:
            ended += tx.end_leases(external, LeaseState.REVOKING, now, reason)
        action = "lease.expire" if state is LeaseState.EXPIRED else "lease.revoke"
        self._audit.append(
            tx,
            [
                AuditEvent(
                    action=action,
                    actor=actor,
                    identity_id=lease.identity_id,
                    owner_id=lease.owner_id,
                    task_id=lease.task_id,
                    reason=reason,
                    result="pending" if lease.state is LeaseState.REVOKING else "ok",
                    details={
                        "lease_id": lease.id,
                        "provider": lease.provider,
                        "profile": lease.profile_id,
                        "parent_id": lease.parent_id,
                        "issued_at": format_time(lease.issued_at),
                        "expires_at": format_time(lease.expires_at),
                        **({"trigger": dict(trigger)} if trigger else {}),
                    },
                )
                for lease in ended
            ],
            now,
        )
        if ended:
            publish_ended(tx, ended)  # other nodes' caches, and the leader's sweep
            tx.on_commit(lambda: self._after_end(ended))
        return ended

    def _after_end(self, ended: Sequence[Lease]) -> None:
        for callback in self.on_ended:
            try:
                callback(ended)
            except Exception:  # a listener must not undo a committed revocation
                log.exception("lease listener failed")

    def _provider(self, lease: Lease) -> Provider:
        try:
            return self._resolve(lease)
        except KeyError:
            raise KeyError(f"no provider {lease.provider!r} for lease {lease.id}") from None

    def revoke(self, target: RevokeTarget, reason: str, actor: str) -> int:
        """Revoke the target and everything derived from it; returns how many leases ended."""
        total = 0
        where = target.filter()
        while True:
            with self._store.transaction() as tx:
                if where is None:
                    lease = tx.get_lease(target.lease_id or "")
                    roots = [lease] if lease is not None and lease.state.live else []
                else:
                    roots = tx.find_leases(where)
                if not roots:
                    return total
                kill = {"kind": "kill_switch", "at": format_time(self._clock())}
                total += len(
                    self._end(
                        tx,
                        self._subtree(tx, roots),
                        LeaseState.REVOKED,
                        reason,
                        actor,
                        kill if target.everything else None,
                    )
                )
            if where is None:
                return total

    def revoke_in(
        self,
        tx: Tx,
        target: RevokeTarget,
        reason: str,
        actor: str,
        trigger: Mapping[str, Any] | None = None,
    ) -> list[Lease]:
        """Revoke inside the caller's transaction (task end, estate changes)."""
        where = target.filter()
        assert where is not None
        ended: list[Lease] = []
        while True:
            roots = tx.find_leases(replace(where, limit=10**9))
            if not roots:
                return ended
            subtree = self._subtree(tx, roots)
            ended += self._end(tx, subtree, LeaseState.REVOKED, reason, actor, trigger)

    def revoke_leases_in(
        self,
        tx: Tx,
        leases: Sequence[Lease],
        reason: str,
        actor: str,
        trigger: Mapping[str, Any] | None = None,
    ) -> list[Lease]:
        """Revoke these leases (those still live) and what derives from them, in `tx`."""
        live = tx.live_lease_ids([lease.id for lease in leases])
        roots = [lease for lease in leases if lease.id in live]
        if not roots:
            return []
        subtree = self._subtree(tx, roots)
        return self._end(tx, subtree, LeaseState.REVOKED, reason, actor, trigger)

    def end_task(self, task: Task, reason: str, actor: str) -> int:
        with self._store.transaction() as tx:
            current = tx.get_task(task.id)
            if current is None or current.status is TaskStatus.ENDED:
                return 0
            now = self._clock()
            tx.put_task(replace(current, status=TaskStatus.ENDED, ended_at=now, end_reason=reason))
            ended = self.revoke_in(
                tx,
                RevokeTarget(task_id=task.id),
                reason,
                actor,
                {"kind": "task_end", "at": format_time(now)},
            )
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="task.end",
                        actor=actor,
                        identity_id=current.identity_id,
                        task_id=current.id,
                        reason=reason,
                        details={"leases_revoked": len(ended), "name": current.name},
                    )
                ],
                now,
            )
            return len(ended)

    # -- the sweep the worker runs --
    def expire_due(self, limit: int = _PAGE) -> int:
        with self._store.transaction() as tx:
            due = tx.leases_due(self._clock(), limit)
            if not due:
                return 0
            return len(
                self._end(
                    tx,
                    self._subtree(tx, due),
                    LeaseState.EXPIRED,
                    "lease reached its end of life",
                    "system:expiry",
                )
            )

    def end_due_tasks(self, limit: int = 500) -> int:
        with self._store.read() as tx:
            due = tx.tasks_due(self._clock(), limit)
        for task in due:
            ended_by_deadline = task.deadline <= self._clock()
            self.end_task(
                task,
                "task deadline passed" if ended_by_deadline else "task attestation expired",
                "system:lifecycle",
            )
        return len(due)

    def revoke_unjustified(self, limit: int = 500) -> int:
        """End the live leases whose justification ended (the one rule,
        tether.model.justification_problems), each audited with the rule's reason.

        The store only prefilters: it names identities that may hold such leases, a page
        at a time; every lease they hold is put to the rule here, and only what the rule
        refuses is revoked.
        """
        now = self._clock()
        total, after = 0, None
        while True:
            with self._store.read() as tx:
                count, after, unjustified = _unjustified_page(tx, now, limit, after)
            for (reason, trigger), leases in unjustified.items():
                total += self._revoke_leases(leases, reason, "system:lifecycle", trigger)
            if count < limit:
                return total

    def _revoke_leases(
        self, leases: Sequence[Lease], reason: str, actor: str, trigger: _Trigger
    ) -> int:
        """Revoke these leases (those still live) and what derives from them, in one go."""
        with self._store.transaction() as tx:
            live = tx.live_lease_ids([lease.id for lease in leases])
            roots = [lease for lease in leases if lease.id in live]
            if not roots:
                return 0
            subtree = self._subtree(tx, roots)
            kind, at = trigger
            described = {"kind": kind, **({"at": at} if at else {})}
            return len(self._end(tx, subtree, LeaseState.REVOKED, reason, actor, described))

    def _failed(self, lease: Lease, exc: ProviderError, now: dt.datetime) -> None:
        """Back off and raise an alert: a revocation that has not completed is never silent."""
        attempts = lease.revoke_attempts + 1
        retry_at = now + backoff(attempts)
        with self._store.transaction() as tx:
            tx.put_lease(replace(lease, revoke_attempts=attempts, next_attempt_at=retry_at))
            self._audit.append(
                tx,
                [
                    AuditEvent(
                        action="alert.revocation_failed",
                        actor="system:revoker",
                        result="alert",
                        identity_id=lease.identity_id,
                        owner_id=lease.owner_id,
                        task_id=lease.task_id,
                        reason=str(exc),
                        details={
                            "lease_id": lease.id,
                            "target": lease.target,
                            "attempts": attempts,
                            "retry_at": format_time(retry_at),
                        },
                    )
                ],
            )
        log.warning(
            "revocation failed; will retry",
            extra={
                "lease_id": lease.id,
                "target": lease.target,
                "attempts": attempts,
                "error": exc.code,
            },
        )
        for callback in self.on_alert:
            callback("revocation_failed")

    def settle_stale_pending(
        self, older_than: dt.timedelta = dt.timedelta(seconds=60), limit: int = 500
    ) -> int:
        """Issuances a crash interrupted: the credential may exist at the target, so the
        lease goes through revocation (idempotent at the provider) rather than vanishing."""
        with self._store.transaction() as tx:
            stale = tx.stale_pending(self._clock() - older_than, limit)
            return len(
                self._end(
                    tx, stale, LeaseState.REVOKED, "issuance did not complete", "system:recovery"
                )
            )

    def retry_revocations(self, limit: int = 100) -> int:
        """Retry external revocations; confirmed ones become `revoked`, others back off."""
        now = self._clock()
        # Claimed, not just read: no other runner retries these (no target revocation
        # twice), and if this one dies they are due again when the claim runs out.
        with self._store.transaction() as tx:
            due = tx.claim_retries(now, now + RETRY_CLAIM, limit)
        confirmed = 0
        for lease in due:
            try:
                self._provider(lease).revoke(lease)
            except ProviderError as exc:
                self._failed(lease, exc, now)
                continue
            with self._store.transaction() as tx:
                done = tx.end_leases(
                    [lease.id], LeaseState.REVOKED, self._clock(), lease.end_reason or "revoked"
                )
                self._audit.append(
                    tx,
                    [
                        AuditEvent(
                            action="lease.revoke.confirmed",
                            actor="system:revoker",
                            identity_id=lease.identity_id,
                            owner_id=lease.owner_id,
                            task_id=lease.task_id,
                            reason=lease.end_reason,
                            details={"lease_id": lease.id, "attempts": lease.revoke_attempts + 1},
                        )
                    ],
                )
            confirmed += len(done)
        return confirmed

    # -- by id, for transports --
    def end_task_by_id(self, task_id: str, reason: str, actor: str) -> tuple[Task, int]:
        """End the task `task_id` names and its leases: the task as it is afterwards, and
        how many leases ended with it (0 when it had ended already)."""
        with self._store.read() as tx:
            task = tx.get_task(task_id)
        if task is None:
            raise NotFoundError(f"no task {task_id!r}")
        revoked = self.end_task(task, reason, actor)
        with self._store.read() as tx:
            ended = tx.get_task(task_id)
        return (task if ended is None else ended), revoked


#: A lifecycle trigger as the evidence report counts it: its kind, and when it fired
#: where the data says so (an approval's expiry; None where the estate change did).
_Trigger = tuple[str, str | None]


def _trigger_of(
    problem: Unjustified,
    identity: Identity,
    departed: Mapping[str, dt.datetime],
    vendors: Mapping[str, Vendor],
) -> _Trigger:
    code = problem.code
    if code == "approval-expired" and identity.approval is not None:
        return "approval_expiry", format_time(identity.approval.expires_at)
    if code == "vendor-contract-ended":
        vendor = vendors.get(identity.vendor_id or "")
        return "vendor_end", format_time(vendor.contract_ends) if vendor else None
    if code == "owner-departed":
        at = departed.get(identity.owner_id)
        return "owner_departed", format_time(at) if at else None
    if code == "identity-expired" and identity.expires_at is not None:
        return "identity_expiry", format_time(identity.expires_at)
    if code == "identity-inactive" and identity.status is IdentityStatus.RETIRED:
        return "retirement", None
    return code.replace("-", "_"), None


def _unjustified_page(
    tx: Tx, now: dt.datetime, limit: int, after: str | None
) -> tuple[int, str | None, dict[tuple[str, _Trigger], list[Lease]]]:
    """One page of the prefilter's candidates put to the rule: how many candidates, the
    last one's id, and the leases the rule refuses, by the first reason it gives."""
    owners = {k: Owner.from_spec(v) for k, v in tx.estate_objects("owner").items()}
    vendors = {k: Vendor.from_spec(v) for k, v in tx.estate_objects("vendor").items()}
    ended_vendors = [v.id for v in vendors.values() if v.contract_ends <= now]
    stored = tx.estate_objects("governance").get(GOVERNANCE_ID, {})
    departed = suspended_owners(GovernanceSettings.from_spec(stored), owners.values())
    ended_owners = [owner_id for owner_id, at in departed.items() if at <= now]
    specs = tx.unjustified_identities(
        now, ended_vendors, limit, after, ended_owner_ids=ended_owners
    )
    by_reason: dict[tuple[str, _Trigger], list[Lease]] = {}
    for spec in specs:
        identity = Identity.from_spec(spec)
        for lease in _live_leases(tx, identity.id):
            problems = justification_problems(
                identity,
                now,
                owners=owners,
                vendors=vendors,
                justified_for=lease.placement,
                departed=departed,
            )
            if problems:
                trigger = _trigger_of(problems[0], identity, departed, vendors)
                by_reason.setdefault((problems[0].reason, trigger), []).append(lease)
    return len(specs), specs[-1]["id"] if specs else after, by_reason


def _live_leases(tx: Tx, identity_id: str) -> list[Lease]:
    """Every live lease of an identity, read in pages."""
    found: list[Lease] = []
    where = LeaseFilter(identity_id=identity_id, limit=_PAGE)
    while page := tx.find_leases(where):
        found += page
        if len(page) < _PAGE:
            break
        where = replace(where, after_id=page[-1].id)
    return found
