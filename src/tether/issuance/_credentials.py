"""Credentials in target systems (PostgreSQL roles, Redis users), issued in two phases."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from tether._internal.tokens import token_hash
from tether.issuance._decide import decide, deny, task_for, write_pending_lease
from tether.issuance._parts import IssuanceParts
from tether.issuance._request import IssuanceRequest
from tether.issuance._subjects import Subjects
from tether.issuance.errors import AccessDenied, InvalidGrant
from tether.lease import RevokeTarget
from tether.model import ExpiryBound, Lease, LeaseState
from tether.policy import Decision, entitled_scopes
from tether.providers import IssuedCredential


@dataclass(frozen=True, slots=True)
class CredentialResult:
    """A credential for a target system: connection details, the secret (shown once)."""

    lease: Lease
    secret: str = field(repr=False)
    details: Mapping[str, Any] = field(default_factory=dict)
    bounded_by: str = ""


@dataclass(frozen=True, slots=True)
class CredentialAsk:
    """What the caller of /v1/creds asks for besides the profile."""

    task_id: str | None = None
    ttl: dt.timedelta | None = None
    intent: str | None = None
    source_ip: str | None = None


_ACTION = "credential.issue"


class TargetCredentials:
    def __init__(self, parts: IssuanceParts, subjects: Subjects) -> None:
        self._parts = parts
        self._subjects = subjects

    def _request(self, profile_id: str, bearer: str, ask: CredentialAsk) -> IssuanceRequest:
        subject = self._subjects.resolve_bearer(bearer)
        if subject.via == "token":
            raise InvalidGrant("present a task token or an attestation token")
        view = self._parts.view.current
        identity = subject.identity
        profile = view.profiles.get(profile_id)
        # Decide before looking: a caller not entitled to a profile learns nothing of
        # whether it, or its target, exists; the answer is the same either way.
        if profile is None or profile.target is None:
            raise _not_entitled(identity.id, profile_id)
        entitled = entitled_scopes(identity, profile)
        now = self._parts.clock()
        return IssuanceRequest(
            action="issue",
            subject=subject,
            profile=profile,
            view=view,
            now=now,
            ttl=ask.ttl or profile.max_ttl,
            scopes=tuple(entitled or ()),
            entitled=entitled,
            task=task_for(self._parts, subject, ask.task_id),
            intent=ask.intent,
            source_ip=ask.source_ip,
        )

    def _refuse(self, request: IssuanceRequest, decision: Decision) -> None:
        if request.entitled is None:
            self._parts.record([request.audit_event(_ACTION, decision)])
            raise _not_entitled(request.identity.id, request.profile.id)
        deny(self._parts, request, decision, _ACTION)

    def issue(self, profile_id: str, bearer: str, ask: CredentialAsk) -> CredentialResult:
        """Phase 1 commits the lease as `pending` before the target is touched
        (invariant 1); phase 2 creates the object; phase 3 activates the lease. A crash
        between them leaves a pending lease that recovery revokes at the target
        (idempotently)."""
        request = self._request(profile_id, bearer, ask)
        decision = decide(self._parts, request)
        if not decision.allowed:
            self._refuse(request, decision)
        target = request.profile.target
        assert target is not None
        provider = self._parts.target_provider(target)
        bound = request.bound()
        with self._parts.store.transaction() as tx:
            lease, request = write_pending_lease(tx, request, bound, audience=target, target=target)
        try:
            credential = provider.issue(lease, request.identity, request.profile)
        except Exception:
            # The object may or may not exist: revocation (idempotent) settles it.
            self._revoke(lease, "issuance failed")
            raise
        lease = self._activate(request, decision, lease, bound, credential)
        self._parts.record_usage(request.usage("issue"))
        return _result(lease, credential, bound)

    def _activate(
        self,
        request: IssuanceRequest,
        decision: Decision,
        lease: Lease,
        bound: ExpiryBound,
        credential: IssuedCredential,
    ) -> Lease:
        with self._parts.store.transaction() as tx:
            current = tx.get_lease(lease.id)
            ended = current is None or current.state is not LeaseState.PENDING
            if current is not None and not ended:
                # The password's keyed hash, so that a leaked copy is tied to its lease
                # (tether.scan); it can never be presented as a bearer token (wrong shape).
                lease = replace(
                    current,
                    state=LeaseState.ACTIVE,
                    token_hash=token_hash(self._parts.token_key(), credential.secret),
                )
                tx.put_lease(lease)
                event = request.audit_event(_ACTION, decision, lease=lease, bound=bound)
                self._parts.record([event], tx)
        if ended:
            # Revoked while it was being made (its task ended): never hand it out.
            self._revoke(lease, "revoked during issuance")
            raise InvalidGrant("the credential was revoked while being issued")
        return lease

    def _revoke(self, lease: Lease, reason: str) -> None:
        self._parts.leases.revoke(RevokeTarget(lease_id=lease.id), reason, "system:issuance")


def _not_entitled(identity_id: str, profile_id: str) -> AccessDenied:
    return AccessDenied(f"denied: identity {identity_id} is not entitled to profile {profile_id}")


def _result(lease: Lease, credential: IssuedCredential, bound: ExpiryBound) -> CredentialResult:
    return CredentialResult(
        lease=lease,
        secret=credential.secret,
        details=dict(credential.extra),
        bounded_by=bound.name,
    )
