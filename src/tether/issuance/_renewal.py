"""Renewal: an opaque or target credential's lease extended after a fresh decision."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from tether.issuance._decide import decide, deny
from tether.issuance._parts import IssuanceParts
from tether.issuance._request import IssuanceRequest
from tether.issuance._subjects import Subject
from tether.issuance.errors import InvalidGrant, InvalidRequest, NotFound
from tether.model import ExpiryBound, Lease, LeaseState, Task, TaskStatus
from tether.policy import entitled_scopes
from tether.targets import renewable_kinds


class Renewal:
    def __init__(self, parts: IssuanceParts) -> None:
        self._parts = parts

    def _load(
        self, lease_id: str, caller: Subject | None
    ) -> tuple[Lease, Lease | None, Task | None]:
        """The lease, its parent and its task; refused unless the caller may renew it."""
        with self._parts.store.read() as tx:
            lease = tx.get_lease(lease_id)
            parent = tx.get_lease(lease.parent_id) if lease and lease.parent_id else None
            task = tx.get_task(lease.task_id) if lease and lease.task_id else None
        if lease is None or (
            caller is not None and (caller.task is None or lease.task_id != caller.task.id)
        ):
            raise NotFound(f"no lease {lease_id!r} for this caller")
        if lease.state is not LeaseState.ACTIVE or lease.expires_at <= self._parts.clock():
            raise InvalidGrant(f"lease {lease_id} is no longer active")
        # Opaque tokens and the target kinds that say so are renewed in place.
        if lease.provider != "token" and lease.provider not in renewable_kinds():
            raise InvalidRequest(
                f"{lease.provider} credentials are not renewed in place; exchange again"
            )
        if task is not None and task.status is not TaskStatus.ACTIVE:
            raise InvalidGrant("the lease's task has ended")
        return lease, parent, task

    def _request(
        self, lease: Lease, parent: Lease | None, task: Task | None, ttl: dt.timedelta | None
    ) -> IssuanceRequest:
        view = self._parts.view.current
        identity = view.identities.get(lease.identity_id)
        profile = view.profiles.get(lease.profile_id or "")
        if identity is None or profile is None:
            raise InvalidGrant("the lease's identity or profile was removed")
        return IssuanceRequest(
            action="renew",
            # The lease itself is what the renewal stands on (its placement is checked).
            subject=Subject.of_lease(identity, lease, task, "renewal"),
            profile=profile,
            view=view,
            now=self._parts.clock(),
            ttl=ttl or profile.max_ttl,
            scopes=lease.scopes,
            entitled=entitled_scopes(identity, profile),
            task=task,
            actor=lease.actor,
            parent=parent,
        )

    def renew(
        self, lease_id: str, caller: Subject | None, actor: str, ttl: dt.timedelta | None = None
    ) -> tuple[Lease, ExpiryBound]:
        """Extend an opaque credential's lease after a fresh policy decision (action renew).

        The new end is bounded again by every justification; a renewal never shortens a
        lease and never outlives its task, approval, vendor contract or parent.
        """
        lease, parent, task = self._load(lease_id, caller)
        request = self._request(lease, parent, task, ttl)
        decision = decide(self._parts, request)
        if not decision.allowed:
            deny(self._parts, request, decision, "lease.renew")
        bound = request.bound()
        if lease.target is not None:
            # The target's own expiry (VALID UNTIL) moves first: if the lease moved and the
            # role did not, the credential would die before its lease says it does.
            extended = replace(lease, expires_at=max(lease.expires_at, bound.at))
            self._parts.target_provider(lease.target).renew(extended)
        with self._parts.store.transaction() as tx:
            current = tx.get_lease(lease_id)
            if current is None or current.state is not LeaseState.ACTIVE:
                raise InvalidGrant(f"lease {lease_id} ended meanwhile")
            renewed = replace(current, expires_at=max(current.expires_at, bound.at))
            tx.put_lease(renewed)
            event = request.audit_event(
                "lease.renew", decision, lease=renewed, bound=bound, by=actor
            )
            self._parts.record([event], tx)
        self._parts.record_usage(request.usage("renew"))
        return renewed, bound
